#!/usr/bin/env bash
# The system packages the tests' real peers need, installed when missing (Debian):
#   golang-go + golang-github-vmware-govmomi-dev  build tests/peers/vcsim (vCenter simulator)
#   libvirt-dev + pkg-config                       build libvirt-python (test:/// driver)
#   haproxy                                        two cloud replicas behind a proxy (scale-out test)
set -euo pipefail
needed=(golang-go golang-github-vmware-govmomi-dev libvirt-dev pkg-config haproxy)
missing=()
for pkg in "${needed[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}; install them (apt-get install -y ${missing[*]})" >&2
    exit 2
fi
echo "installing system packages: ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
