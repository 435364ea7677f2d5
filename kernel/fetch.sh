#!/usr/bin/env bash
# Fetches the pinned kernel (kernel/kernel.lock) into CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/rigos/kernel, outside the clone, so every
# clone on the machine shares it) and unpacks vmlinuz and the modules,
# decompressed (Debian ships them as .ko.xz; the signature is inside the
# uncompressed module, so it survives). Idempotent: a verified .deb and
# its unpacked root are reused. Prints the unpacked root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. <(grep -E '^[a-z0-9]+=' "$here/kernel.lock")
cache=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rigos/kernel}
# shellcheck source=/dev/null
. "$here/../hack/apt-fetch.sh"
deb=$(fetch_pinned_deb "$cache" "$package" "$version" "$sha256" "${suite:+$suite main}")
root="$cache/root-$version"
if [ ! -f "$root/boot/vmlinuz-$release" ]; then
  rm -rf "$root.tmp"
  dpkg-deb -x "$deb" "$root.tmp"
  # Debian 13 keeps modules in usr/lib; the imager reads lib/modules.
  if [ -d "$root.tmp/usr/lib/modules" ] && [ ! -e "$root.tmp/lib" ]; then ln -s usr/lib "$root.tmp/lib"; fi
  find "$root.tmp" -name '*.ko.xz' -print0 | xargs -0 -r -P"$(nproc)" -n 64 xz -d
  mv "$root.tmp" "$root"
fi
echo "$root"
