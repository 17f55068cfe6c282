#!/usr/bin/env bash
# The system packages the tests' real peers need, installed when missing (Debian):
#   golang-go + golang-github-vmware-govmomi-dev  build tests/peers/vcsim (vCenter simulator)
#   libvirt-dev + pkg-config                       build libvirt-python (test:/// driver)
#   haproxy                                        two cloud replicas behind a proxy (scale-out test)
#   libvirt-daemon-system + qemu-system-x86 + qemu-utils (without recommends)
#                                                  real QEMU domains (TCG) for libvirt kill -9 tests
#   chromium                                       the portal's browser tests (Playwright drives
#                                                  /usr/bin/chromium; it never downloads one)
# With arguments, only those packages (`make demo`: vcsim's and libvirt's build needs).
set -euo pipefail
needed=(golang-go golang-github-vmware-govmomi-dev libvirt-dev pkg-config haproxy chromium)
bare=(libvirt-daemon-system qemu-system-x86 qemu-utils)
if [ $# -gt 0 ]; then needed=("$@"); bare=(); fi
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
# A fresh machine's package lists may be stale or empty: read them once, then install.
apt_install() { apt-get install -y -q "$@" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }; }
[ ${#with[@]} -eq 0 ] || apt_install "${with[@]}"
[ ${#without[@]} -eq 0 ] || apt_install --no-install-recommends "${without[@]}"
