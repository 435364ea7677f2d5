#!/usr/bin/env bash
# Runs virt-fw-vars (python3-virt-firmware from bookworm-backports) without
# installing it: the .deb is downloaded with an isolated apt configuration
# whose backports source is derived from the system's own Debian mirror,
# unpacked into .cache/virt-firmware, and run with bookworm's python3.
# Arguments are passed to virt-fw-vars.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIRT_FW_CACHE:-$here/.cache/virt-firmware}
tool="$cache/root/usr/bin/virt-fw-vars"
if [ ! -f "$tool" ]; then
  mkdir -p "$cache/lists/partial" "$cache/archives/partial"
  # The mirror the system already uses (deb822 or one-line sources).
  mirror=$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | awk '/^[[:space:]]*(URIs:|deb )/ { for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\// && $i !~ /security/) { print $i; exit } }')
  [ -n "$mirror" ] || { echo "virt-fw-vars: no Debian mirror found in the apt sources" >&2; exit 1; }
  echo "deb $mirror bookworm-backports main" > "$cache/sources.list"
  o=(-o Dir::Etc::SourceList="$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$cache/lists" -o Dir::Cache::Archives="$cache/archives" -o APT::Get::List-Cleanup=0)
  apt-get "${o[@]}" update -q >&2
  (cd "$cache" && apt-get "${o[@]}" download -q python3-virt-firmware >&2)
  rm -rf "$cache/root" && dpkg-deb -x "$cache"/python3-virt-firmware_*.deb "$cache/root"
fi
PYTHONPATH=$(echo "$cache"/root/usr/lib/python3/dist-packages) exec /usr/bin/python3 "$tool" "$@"
