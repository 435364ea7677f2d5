#!/usr/bin/env bash
# Fetches the NVIDIA driver's pieces a GPU image needs, pinned to one
# driver version from Debian's non-free archive, into .cache/nvidia:
#   libnvidia-ml1 (NVML, for the agent), libcuda1 (for CUDA containers),
#   firmware-nvidia-gsp (GSP firmware), nvidia-kernel-source (the modules).
# With KERNEL_BUILD set to a RigOS kernel build tree (make kernel), it also
# builds the kernel modules against it and signs them with RigOS's module
# key (MODULE_KEY, MODULE_CERT), since the image loads signed modules only.
# docs/gpu.md explains how the pieces go into an image.
#
#   hack/nvidia.sh                          # download and unpack
#   KERNEL_BUILD=... MODULE_KEY=... MODULE_CERT=... hack/nvidia.sh   # and build
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=${NVIDIA_VERSION:-535.261.03-1}
cache=${NVIDIA_CACHE:-$here/.cache/nvidia}
pkgs=(libnvidia-ml1 libcuda1 firmware-nvidia-gsp nvidia-kernel-source)

. "$here/hack/apt-fetch.sh"
apt_fetch "$cache" "bookworm non-free non-free-firmware" "${pkgs[@]/%/=$version}"
rm -rf "$cache/root" && mkdir -p "$cache/root"
for p in "${pkgs[@]}"; do dpkg-deb -x "$cache"/archives/"${p}"_"${version}"_*.deb "$cache/root"; done
src="$cache/src"
rm -rf "$src" && mkdir -p "$src" && tar -C "$src" -xJf "$cache/root/usr/src/nvidia-kernel.tar.xz"
echo "nvidia: driver $version unpacked in $cache/root" >&2
ls "$cache"/root/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.* "$cache"/root/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.* 2>/dev/null | head -2 >&2 || true

if [ -n "${KERNEL_BUILD:-}" ]; then
  : "${MODULE_KEY:?MODULE_KEY (RigOS module signing key) is required to build modules}"
  : "${MODULE_CERT:?MODULE_CERT is required to build modules}"
  kdir="$src/modules/nvidia-kernel"
  make -C "$KERNEL_BUILD" M="$kdir" -j"$(nproc)" modules
  for m in "$kdir"/*.ko; do
    "$KERNEL_BUILD/scripts/sign-file" sha512 "$MODULE_KEY" "$MODULE_CERT" "$m"
  done
  mkdir -p "$cache/modules" && cp "$kdir"/*.ko "$cache/modules/"
  echo "nvidia: signed modules in $cache/modules" >&2
fi
echo "$cache/root"
