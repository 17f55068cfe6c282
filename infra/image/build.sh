#!/usr/bin/env bash
# Build the cloud's and the agent's container images with no container registry: mmdebstrap
# lays a Debian root file system from Debian's packages, pip installs into /opt/dockyard in
# it the wheels built here (ours and its dependencies', no index inside the image), and
# umoci packs that root as one layer of an OCI image, written as an OCI archive:
#   OUT/dockyard-cloud-VERSION.oci.tar   entry point `dockyard serve`
#   OUT/dockyard-agent-VERSION.oci.tar   entry point `dockyard-agent --state ... run`
# both under tini as PID 1: the kernel drops a signal a PID 1 has no handler for, so a
# SIGTERM while the cloud still migrates (before uvicorn's handlers) would wait for SIGKILL.
# After a clean stop uvicorn raises the SIGTERM again, so its process ends by the signal:
# `tini -e 143` reports that as 0 (as PID 1 itself it was 0: PID 1 ignores the signal).
# Where podman is installed, each is also loaded as localhost/dockyard-KIND:VERSION.
# Usage: infra/image/build.sh OUT [cloud] [agent]   (root: mmdebstrap's root mode and umoci
# keep the files' owners). PYTHON: the interpreter whose pip builds the wheels (the venv's);
# SOURCES: the apt sources the root is laid from (this machine's own by default); SUITE.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=infra/image
out=${1:?usage: infra/image/build.sh OUT [cloud] [agent]}
shift
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(cloud agent)
python=${PYTHON:-.venv/bin/python}
suite=${SUITE:-bookworm}
if [ -z "${SOURCES:-}" ]; then
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        [ -s "$f" ] && SOURCES=$f && break
    done
fi
[ -n "${SOURCES:-}" ] || { echo "build.sh: no apt sources found; set SOURCES" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (mmdebstrap --mode=root, umoci)" >&2; exit 2; }
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# Timestamps from the last commit, so two builds of one commit differ only where Debian moved.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$out"
out=$(realpath "$out")
work=$out/work
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# One wheelhouse for both images: ours (with the portal and the C chunker built in) and every
# dependency of the extras they install, as wheels for this Python: bookworm's is 3.11 too
# (another SUITE needs a PYTHON of its own version, for the compiled wheels).
echo "wheels: dockyard $version and its dependencies"
"$python" -m pip wheel -q --disable-pip-version-check --wheel-dir "$work/wheels" '.[cloud,s3,vsphere,ec2]'

for kind in "${kinds[@]}"; do
    case $kind in
        cloud) extras=cloud ;;
        agent) extras=s3,vsphere,ec2 ;;
        *) echo "build.sh: no image kind $kind (cloud or agent)" >&2; exit 2 ;;
    esac
    name=dockyard-$kind
    root=$work/$kind-root
    echo "$name: Debian $suite root"
    WHEELS=$work/wheels EXTRAS=$extras VERSION=$version KIND=$kind \
        mmdebstrap --mode=root --variant=apt --format=directory --quiet \
        --include=python3,python3-venv,ca-certificates,passwd,tini,tzdata \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="$PWD/$here/customize.sh" \
        "$suite" "$root" "$SOURCES"

    echo "$name: OCI image"
    layout=$work/$kind-oci
    ref=$layout:$version
    umoci init --layout "$layout"
    umoci new --image "$ref"
    umoci insert --image "$ref" --history.created "$created" --history.comment "Debian $suite and dockyard $version" "$root" /
    common=(
        --created "$created" --author "Dockyard"
        --config.user 10001:10001
        --config.env PATH=/opt/dockyard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1
        --config.label "org.opencontainers.image.title=$name"
        --config.label "org.opencontainers.image.version=$version"
        --config.label "org.opencontainers.image.created=$created"
    )
    if [ "$kind" = cloud ]; then
        umoci config --image "$ref" "${common[@]}" \
            --config.entrypoint /usr/bin/tini --config.entrypoint=-e --config.entrypoint=143 \
            --config.entrypoint=-- \
            --config.entrypoint /opt/dockyard/bin/dockyard --config.cmd serve \
            --config.env DOCKYARD_HOST=0.0.0.0 --config.env DOCKYARD_DATA_DIR=/var/lib/dockyard \
            --config.exposedports 8080/tcp --config.volume /var/lib/dockyard \
            --config.workingdir /var/lib/dockyard
    else
        umoci config --image "$ref" "${common[@]}" \
            --config.entrypoint /usr/bin/tini --config.entrypoint=-e --config.entrypoint=143 \
            --config.entrypoint=-- \
            --config.entrypoint /opt/dockyard/bin/dockyard-agent \
            --config.cmd --state --config.cmd /var/lib/dockyard-agent --config.cmd run \
            --config.volume /var/lib/dockyard-agent --config.workingdir /var/lib/dockyard-agent
    fi
    umoci gc --layout "$layout"
    archive=$out/$name-$version.oci.tar
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        -C "$layout" -cf "$archive" .
    rm -rf "$root" "$layout"
    echo "$name: $archive ($(du -m "$archive" | cut -f1) MB)"
    if command -v podman >/dev/null 2>&1; then
        id=$(podman pull -q "oci-archive:$archive")
        podman tag "$id" "localhost/$name:$version"
        echo "$name: loaded into podman as localhost/$name:$version"
    fi
done
