#!/usr/bin/env bash
# Fetches the imager's pinned Debian inputs (inputs.lock: systemd-stub,
# mkfs.erofs and liblz4, static libseccomp) into CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/rigos/inputs) and unpacks them into one
# root named after the pins. Idempotent: verified .debs and a complete
# root are reused. Prints the unpacked root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lock="$here/inputs.lock"
cache=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rigos/inputs}
# shellcheck source=/dev/null
. "$here/../../../hack/apt-fetch.sh"
id=$(grep -E '^deb ' "$lock" | sha256sum | cut -c1-16)
root="$cache/root-$id"
if [ ! -f "$root/.complete" ]; then
  rm -rf "$root.tmp"
  mkdir -p "$root.tmp"
  while read -r kind package version sha256; do
    [ "$kind" = deb ] || continue
    deb=$(fetch_pinned_deb "$cache" "$package" "$version" "$sha256")
    dpkg-deb -x "$deb" "$root.tmp"
  done < "$lock"
  touch "$root.tmp/.complete"
  rm -rf "$root"
  mv "$root.tmp" "$root"
fi
echo "$root"
