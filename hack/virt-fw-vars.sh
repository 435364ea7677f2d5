#!/usr/bin/env bash
# Runs virt-fw-vars (python3-virt-firmware from bookworm-backports) without
# installing it: the .deb is downloaded with an isolated apt configuration
# (hack/apt-fetch.sh), unpacked into .cache/virt-firmware, and run with
# bookworm's python3.
# Arguments are passed to virt-fw-vars.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIRT_FW_CACHE:-$here/.cache/virt-firmware}
tool="$cache/root/usr/bin/virt-fw-vars"
if [ ! -f "$tool" ]; then
  . "$here/hack/apt-fetch.sh"
  apt_fetch "$cache" "bookworm-backports main" python3-virt-firmware
  rm -rf "$cache/root" && dpkg-deb -x "$cache"/archives/python3-virt-firmware_*.deb "$cache/root"
fi
PYTHONPATH=$(echo "$cache"/root/usr/lib/python3/dist-packages) exec /usr/bin/python3 "$tool" "$@"
