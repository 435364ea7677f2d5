#!/usr/bin/env bash
# Builds the NVIDIA open GPU kernel modules pinned in nvidia.lock against
# the pinned kernel's headers, with the pinned compiler, and prints the
# folder holding them (unsigned: the imager signs them with RigOS's db
# key) and the GSP firmware:
#
#   OUT/modules/nvidia.ko, nvidia-uvm.ko   stripped of debug information
#   OUT/firmware/nvidia/VERSION/*.bin      GSP firmware
#   OUT/user/lib/*.so.VERSION, user/bin/   the user-space driver
#   OUT/user/glibc/                        glibc for RigOS's GPU helper
#   OUT/VERSION                            the driver version
#
# Everything lives in ${XDG_CACHE_HOME:-~/.cache}/rigos/nvidia (CACHE),
# outside the clone: the .debs, a minimal Debian chroot with the compiler
# (debootstrap, ~1 min, reused), and OUT, named by the SHA-256 of this
# script, the lock and the patches, so a second run, another clone or CI
# on the same machine reuses it. Needs root (chroot). Progress goes to
# stderr. Cold: ~4 min on 2 cores; warm: instant.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rigos/nvidia}
lock=$here/nvidia.lock
# shellcheck source=/dev/null
. "$here/../../hack/apt-fetch.sh"
say() { echo "nvidia: $*" >&2; }

key=$(cat "$0" "$lock" "$here"/patches/*.patch | sha256sum | cut -c1-16)
out=$cache/out-$key
if [ -f "$out/VERSION" ]; then
  say "reusing $out"
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { say "building the modules needs root (a build chroot); run as root or pass the imager a built folder"; exit 1; }
command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap (make deps does)"; exit 1; }

# 1. The pinned .debs, each checked against its SHA-256.
declare -A debs
user=()
glibc=()
while read -r kind pkg ver sum suite comp; do
  case $kind in deb|user|glibc) ;; *) continue ;; esac
  debs[$pkg]=$(fetch_pinned_deb "$cache/debs-$suite-$comp" "$pkg" "$ver" "$sum" "$suite $comp")
  case $kind in user) user+=("$pkg") ;; glibc) glibc+=("$pkg") ;; esac
done < "$lock"
read -r _ tsuite tpkg tver < <(grep '^toolchain ' "$lock")
mapfile -t modules < <(awk '$1 == "module" { print $2 }' "$lock")

# 2. The build chroot, reused while the toolchain line stays the same.
mirror=$(debian_mirror)
chroot=$cache/chroot-$(echo "$tsuite $tpkg $tver" | sha256sum | cut -c1-12)
if [ ! -f "$chroot/.ready" ]; then
  say "creating the $tsuite build chroot with $tpkg $tver (debootstrap, about a minute)"
  rm -rf "$chroot"
  debootstrap --variant=minbase --include="$tpkg,make,libc6-dev,binutils,libelf1t64,xz-utils" "$tsuite" "$chroot" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { say "debootstrap failed: see $cache/debootstrap.log"; exit 1; }
  touch "$chroot/.ready"
fi
got=$(chroot "$chroot" dpkg-query -W -f '${Version}' "$tpkg")
if [ "$got" != "$tver" ]; then
  say "the build chroot has $tpkg $got, not the pinned $tver (the suite moved on): pin the new version in nvidia.lock after checking it matches the kernel's CONFIG_CC_VERSION_TEXT"
  exit 1
fi

# 3. Headers and source in a fresh tree at a fixed path (the path ends up
# in the modules' strings, so it never varies).
rm -rf "$chroot/usr/src/linux-headers-"* "$chroot/usr/lib/linux-kbuild-"* "$chroot/build"
for p in "${!debs[@]}"; do
  case $p in linux-headers-*|linux-kbuild-*) dpkg-deb -x "${debs[$p]}" "$chroot" ;; esac
done
mkdir -p "$chroot/build"
dpkg-deb --fsys-tarfile "${debs[nvidia-open-kernel-source]}" | tar -xO ./usr/src/nvidia-open-kernel.tar.xz | tar -C "$chroot/build" -xJ
src=modules/nvidia-open-kernel
[ -f "$chroot/build/$src/Makefile" ] || { say "the source package does not hold $src"; exit 1; }
for p in "$here"/patches/*.patch; do
  patch -s -p1 -d "$chroot/build/$src" < "$p"
done
hdr=$(basename "$(ls -d "$chroot"/usr/src/linux-headers-*-amd64)")
common=$(basename "$(ls -d "$chroot"/usr/src/linux-headers-*-common)")

# 4. Build (the kernel's build system, as DKMS would run it), then strip.
say "building ${modules[*]} against $hdr (a few minutes)"
start=$(date +%s)
chroot "$chroot" /usr/bin/env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH=0 \
  make -C "/build/$src" -j"$(nproc)" SYSSRC="/usr/src/$common" SYSOUT="/usr/src/$hdr" \
  NV_EXCLUDE_BUILD_MODULES="nvidia-drm nvidia-peermem" modules >"$cache/build.log" 2>&1 \
  || { say "the module build failed: see $cache/build.log"; tail -20 "$cache/build.log" >&2; exit 1; }
say "built in $(( $(date +%s) - start ))s"
rm -rf "$out.tmp" && mkdir -p "$out.tmp/modules"
for m in "${modules[@]}"; do
  chroot "$chroot" strip --strip-debug -o "/build/$m.stripped" "/build/$src/$m.ko"
  mv "$chroot/build/$m.stripped" "$out.tmp/modules/$m.ko"
done

# 5. GSP firmware and the version.
dpkg-deb -x "${debs[firmware-nvidia-gsp]}" "$out.tmp/fw"
version=$(awk '$1 == "deb" && $2 == "nvidia-open-kernel-source" { sub(/-[^-]*$/, "", $3); print $3 }' "$lock")
mkdir -p "$out.tmp/firmware/nvidia"
mv "$out.tmp/fw/lib/firmware/nvidia/$version" "$out.tmp/firmware/nvidia/" 2>/dev/null \
  || mv "$out.tmp/fw/usr/lib/firmware/nvidia/$version" "$out.tmp/firmware/nvidia/"
rm -rf "$out.tmp/fw"
# The user-space driver: the real files, named by their full version (the
# CDI spec mounts each under its soname), and nvidia-smi.
mkdir -p "$out.tmp/user/lib" "$out.tmp/user/bin" "$out.tmp/u"
for p in "${user[@]}"; do dpkg-deb -x "${debs[$p]}" "$out.tmp/u"; done
find "$out.tmp/u" -type f -name "*.so.$version" -exec mv -t "$out.tmp/user/lib" {} +
find "$out.tmp/u" -type f -name nvidia-smi -perm -u+x -exec mv -t "$out.tmp/user/bin" {} +
rm -rf "$out.tmp/u"
mkdir -p "$out.tmp/user/glibc" "$out.tmp/g"
for p in "${glibc[@]}"; do dpkg-deb -x "${debs[$p]}" "$out.tmp/g"; done
for f in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
  mv "$out.tmp/g/usr/lib/x86_64-linux-gnu/$f" "$out.tmp/user/glibc/"
done
rm -rf "$out.tmp/g"
echo "$version" > "$out.tmp/VERSION"
cp "$lock" "$out.tmp/nvidia.lock"
rm -rf "$out" && mv "$out.tmp" "$out"
say "modules and firmware in $out"
echo "$out"
