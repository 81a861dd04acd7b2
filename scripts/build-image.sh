#!/bin/bash
# Build the amphora image with diskimage-builder:
#
#   scripts/build-image.sh DEB [OUTPUT]
#
# DEB is the agent package ("make deb"), OUTPUT the qcow2 (default
# bin/amphora-x64-haproxy.qcow2). The image is
#
#   disk-image-create debian-minimal vm amphora-agent-go
#
# with this repository's image/ on ELEMENTS_PATH. Two caches keep a
# rebuild after a code change to a few minutes:
#
#  * the base root file system: everything but the agent package
#    (debian-minimal + amphora-base-go, built once by diskimage-builder
#    as a tar), kept under $AMPHORA_IMAGE_CACHE/base-<key>, <key> being a
#    hash of its inputs (this script's recipe, diskimage-builder's
#    version, release, mirrors, the amphora-base-go element). The image
#    build starts from it through diskimage-builder's own debootstrap
#    cache (DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE), then runs every element as
#    usual: packages already there install in seconds, security updates
#    published since arrive through the elements' dist-upgrade. A base
#    older than AMPHORA_IMAGE_BASE_MAX_AGE_DAYS (14) is rebuilt.
#  * the image itself: OUTPUT.inputs records the hash of everything it
#    was built from (base key, package, elements); a build with the same
#    inputs does nothing.
#
# The output is written under a temporary name and renamed into place, so
# a reader of OUTPUT never sees a partial image.
#
# Environment (all optional):
#   AMPHORA_IMAGE_CACHE       cache directory (/var/cache/amphora-agent-image)
#   AMPHORA_IMAGE_REBUILD=1   ignore OUTPUT.inputs
#   DIB_RELEASE               Debian release (bookworm)
#   DIB_DISTRIBUTION_MIRROR, DIB_DEBIAN_SECURITY_MIRROR, DIB_DEBIAN_SECURITY_SUBPATH
#                             mirrors (deb.debian.org)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
deb=${1:?usage: $0 DEB [OUTPUT]}
out=${2:-$repo/bin/amphora-x64-haproxy.qcow2}
deb=$(realpath "$deb")
mkdir -p "$(dirname "$out")"
out=$(realpath "$out")

# Change when the way the base or the image is built changes, so that an
# old cache is not reused.
recipe="amphora-agent-image/3"

cache=${AMPHORA_IMAGE_CACHE:-/var/cache/amphora-agent-image}
max_age_days=${AMPHORA_IMAGE_BASE_MAX_AGE_DAYS:-14}
distro=debian-minimal
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-http://deb.debian.org/debian}
export DIB_DEBIAN_SECURITY_MIRROR=${DIB_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
export DIB_DEBIAN_SECURITY_SUBPATH=${DIB_DEBIAN_SECURITY_SUBPATH:--security}
export ELEMENTS_PATH=$repo/image${ELEMENTS_PATH:+:$ELEMENTS_PATH}
arch=amd64

log() { printf '%s image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (loop devices, mounts, chroot)"
[ -f "$deb" ] || die "no package $deb (make deb)"
for tool in disk-image-create qemu-img debootstrap partx losetup flock sha256sum; do
	command -v "$tool" >/dev/null || die "$tool is missing (scripts/deps.sh image)"
done

# diskimage-builder's vm element maps partitions with device-mapper; on a
# kernel without it use the loop-device substitute (scripts/dib-nodm).
has_dm() { grep -qw device-mapper /proc/misc 2>/dev/null; }
if ! has_dm && ! { modprobe dm_mod 2>/dev/null && has_dm; }; then
	log "no device-mapper in this kernel: partitions through loop devices (scripts/dib-nodm)"
	export PATH=$repo/scripts/dib-nodm:$PATH
	AMPHORA_NODM_STATE=$(mktemp -d /run/amphora-nodm.XXXXXX)
	export AMPHORA_NODM_STATE
	# libdevmapper (grub's device probing) makes an inert
	# /dev/mapper/control; leave /dev as it was.
	[ -e /dev/mapper/control ] || nodm_cleanup="rm -f /dev/mapper/control; rmdir /dev/mapper 2>/dev/null"
	trap 'rm -rf "$AMPHORA_NODM_STATE"; eval "${nodm_cleanup:-}"' EXIT
else
	command -v sudo >/dev/null || die "sudo is missing (scripts/deps.sh image)"
fi

mkdir -p "$cache"
exec 9>"$cache/lock"
if ! flock -n 9; then
	log "waiting for another image build (lock $cache/lock)"
	flock 9
fi

# tree_hash DIR: the content, names and modes of every file below DIR
# (documentation aside).
tree_hash() {
	(cd "$1" && find . \( -type f -o -type l \) ! -name 'README*' | LC_ALL=C sort | while read -r f; do
		printf '%s %s ' "$f" "$(stat -c %a "$f")"
		if [ -L "$f" ]; then readlink "$f"; else sha256sum <"$f"; fi
	done) | sha256sum | cut -c1-16
}

dib_version=$(dpkg-query -W -f='${Version}' python3-diskimage-builder 2>/dev/null || disk-image-create --version)
base_key=$(printf '%s\n' "$recipe" "$dib_version" "$distro" "$DIB_RELEASE" "$arch" \
	"$DIB_DISTRIBUTION_MIRROR" "$DIB_DEBIAN_SECURITY_MIRROR" "$DIB_DEBIAN_SECURITY_SUBPATH" \
	"$(tree_hash "$repo/image/amphora-base-go")" | sha256sum | cut -c1-16)
base_dir=$cache/base-$base_key
base_tar=$base_dir/debootstrap-debian-$DIB_RELEASE-$arch.tar.gz
image_key=$(printf '%s\n' "$base_key" "$(sha256sum <"$deb")" "$(tree_hash "$repo/image/amphora-agent-go")" \
	"$(tree_hash "$repo/scripts/dib-nodm")" "$(sha256sum <"$0")" | sha256sum | cut -c1-16)

if [ -z "${AMPHORA_IMAGE_REBUILD:-}" ] && [ -f "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$image_key" ] &&
	[ -n "$(find "$base_tar" -mtime -"$max_age_days" 2>/dev/null)" ]; then
	log "$out is up to date (inputs $image_key)"
	exit 0
fi

# run_dib LOG ARGS...: disk-image-create with its output in LOG; the tail
# is shown when it fails.
run_dib() {
	local logfile=$1
	shift
	log "disk-image-create $* (log: $logfile)"
	if ! disk-image-create "$@" >"$logfile" 2>&1; then
		tail -n 60 "$logfile" >&2
		die "disk-image-create failed (full log: $logfile)"
	fi
}

start=$(date +%s)
if [ -z "$(find "$base_tar" -mtime -"$max_age_days" 2>/dev/null)" ]; then
	log "building the base root file system $base_dir"
	# Leftovers of builds that crashed.
	find "$cache" -maxdepth 1 -name 'base-*.build-*' -exec rm -rf {} +
	build=$(mktemp -d "$base_dir.build-XXXXXX")
	# The pristine debootstrap and the downloaded packages are cached by
	# diskimage-builder itself under $cache/dib.
	DIB_DEBOOTSTRAP_CACHE=1 DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE=1 \
		run_dib "$build/build.log" -t tar --image-cache "$cache/dib" -o "$build/base" "$distro" amphora-base-go
	# diskimage-builder's tar leaves out /proc and /sys; the image build
	# mounts them again.
	mkdir -m 0555 "$build/empty" "$build/empty/proc" "$build/empty/sys"
	tar --append -f "$build/base.tar" -C "$build/empty" --owner=root --group=root ./proc ./sys
	rmdir "$build/empty/proc" "$build/empty/sys" "$build/empty"
	gzip -1 <"$build/base.tar" >"$build/$(basename "$base_tar")"
	rm -f "$build/base.tar"
	ln -s ../dib/apt "$build/apt"
	rm -rf "$base_dir"
	mv "$build" "$base_dir"
	# Bases of other inputs are not needed any more.
	find "$cache" -maxdepth 1 -name 'base-*' ! -name "base-$base_key" -exec rm -rf {} +
	log "base root file system built in $(($(date +%s) - start)) s ($(du -sh "$base_tar" | cut -f1))"
fi

image_start=$(date +%s)
tmp=$(dirname "$out")/.$(basename "$out" .qcow2).build-$$
rm -rf "$tmp" "$tmp.qcow2" "$tmp.d"
trap 'rm -rf "$tmp" "$tmp.qcow2" "$tmp.d"; [ -z "${AMPHORA_NODM_STATE:-}" ] || rm -rf "$AMPHORA_NODM_STATE"; eval "${nodm_cleanup:-}"' EXIT
DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE=1 DIB_AMPHORA_AGENT_GO_DEB=$deb \
	run_dib "$out.log" -t qcow2 --image-cache "$base_dir" -o "$tmp" "$distro" vm amphora-agent-go
mv -f "$tmp.qcow2" "$out"
echo "$image_key" >"$out.inputs"
rm -rf "$tmp.d"
end=$(date +%s)
size=$(stat -c %s "$out")
virtual=$(qemu-img info --output=json "$out" | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p')
log "built $out in $((end - start)) s (image step $((end - image_start)) s): $((size / 1048576)) MiB qcow2, $((virtual / 1048576)) MiB disk"
