#!/bin/sh
# Install the Debian/Ubuntu packages the agent, its tests, the demo or the
# benchmarks need. Idempotent: only missing packages are installed, and
# none of their services is started (policy-rc.d), so a distribution
# haproxy or keepalived never runs next to ours.
#
#   scripts/deps.sh            packages for build, demo, tests, the Debian
#                              package (lintian), the image (diskimage-builder)
#                              and the VM tests (qemu, genisoimage for config
#                              drives, ssh, a kernel for the KVM probe boot)
#   scripts/deps.sh bench      ... plus the reference agent (octavia-agent)
set -eu

PKGS="haproxy keepalived nftables ipvsadm iproute2 procps curl ca-certificates
      dbus dbus-user-session systemd python3 python3-octavia python3-cryptography
      tcpdump socat wrk util-linux debootstrap systemd-container
      rsyslog prometheus python3-psutil
      python3-diskimage-builder qemu-utils sudo kpartx lintian
      qemu-system-x86 genisoimage openssh-client cpio linux-image-amd64"
case "${1:-}" in
  bench) PKGS="$PKGS octavia-agent" ;;
  "") ;;
  *) echo "usage: $0 [bench]" >&2; exit 2 ;;
esac

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "deps: all packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "deps: installing$missing"
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap '[ -n "$created_policy" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q $missing
