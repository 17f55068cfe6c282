#!/usr/bin/env bash
# The Debian packages `make image` needs, installed when missing (root only), apart from
# infra/dev-packages.sh so that `make test` never pays for them:
#   mmdebstrap + umoci   lay the images' Debian root and pack it as an OCI image
#   podman + runc        load and run the images (tests/integration/test_image.py); runc,
#                        since crun refuses this kind of machine's hybrid cgroups
set -euo pipefail
needed=(mmdebstrap umoci podman runc)
missing=()
for pkg in "${needed[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}; install them with apt-get" >&2
    exit 2
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >/dev/null; }
}
apt_install "${missing[@]}"
