#!/usr/bin/env bash
# mmdebstrap's customize hook for infra/image/build.sh: $1 is the new root. Installs dockyard
# with the extras of one image into a venv at /opt/dockyard from the wheels build.sh made
# (no index: what is in the image is what was built), adds the service user and its state
# folder, and drops what a container never reads (apt's lists and caches, the wheels).
set -euo pipefail
root=$1
: "${WHEELS:?}" "${EXTRAS:?}" "${VERSION:?}" "${KIND:?}"
cp -r "$WHEELS" "$root/tmp/wheels"
# A clean environment inside: none of the builder's PIP_* or PYTHON* variables.
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
in_root python3 -m venv /opt/dockyard
in_root /opt/dockyard/bin/pip install -q --no-index --find-links /tmp/wheels \
    --disable-pip-version-check --root-user-action=ignore --no-cache-dir \
    "dockyard[$EXTRAS]==$VERSION"
case $KIND in
    cloud) state=/var/lib/dockyard ;;
    agent) state=/var/lib/dockyard-agent ;;
esac
# A fixed uid/gid (10001) so Kubernetes' runAsUser and a volume's owner can name it.
in_root groupadd --gid 10001 dockyard
in_root useradd --uid 10001 --gid 10001 --home-dir "$state" \
    --shell /usr/sbin/nologin dockyard
mkdir -p "$root$state"
chmod 0700 "$root$state"
chown 10001:10001 "$root$state"
rm -rf "$root/tmp/wheels" "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log
