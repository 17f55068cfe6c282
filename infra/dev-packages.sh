#!/usr/bin/env bash
# The system packages the tests' real peers need, installed when missing (Debian):
#   golang-go + golang-github-vmware-govmomi-dev  build tests/peers/vcsim (vCenter simulator)
#   libvirt-dev + pkg-config                       build libvirt-python (test:/// driver)
#   haproxy                                        two cloud replicas behind a proxy (scale-out test)
#   libvirt-daemon-system + qemu-system-x86 + qemu-utils (without recommends)
#                                                  real QEMU domains (TCG) for libvirt kill -9 tests
set -euo pipefail
needed=(golang-go golang-github-vmware-govmomi-dev libvirt-dev pkg-config haproxy)
bare=(libvirt-daemon-system qemu-system-x86 qemu-utils)
missing() {
    local out=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || out+=("$pkg")
    done
    echo "${out[@]}"
}
read -r -a with <<<"$(missing "${needed[@]}")"
read -r -a without <<<"$(missing "${bare[@]}")"
[ ${#with[@]} -eq 0 ] && [ ${#without[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${with[*]} ${without[*]}; install them with apt-get" >&2
    exit 2
fi
echo "installing system packages: ${with[*]} ${without[*]}"
export DEBIAN_FRONTEND=noninteractive
[ ${#with[@]} -eq 0 ] || apt-get install -y -q "${with[@]}" >/dev/null
[ ${#without[@]} -eq 0 ] || apt-get install -y -q --no-install-recommends "${without[@]}" >/dev/null
