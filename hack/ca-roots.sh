#!/usr/bin/env bash
# Builds the registries' CA bundle a RigOS image carries on its system
# partition (imager -ca-roots), from Debian's ca-certificates package,
# pinned by version and SHA-256. The bundle is the package's Mozilla roots
# concatenated in name order, so it is the same on every machine. Cached
# in ${XDG_CACHE_HOME:-~/.cache}/rigos/ca-certificates; prints its path.
set -euo pipefail
package=ca-certificates
version=20250419~deb12u2
sha256=b9f76b5271a7ac373fd5e7e1b5b826a71ddd702b42a0d104955ecb1acfffc94b

cache=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rigos/ca-certificates}
mkdir -p "$cache"
bundle="$cache/ca-certificates-$version.crt"
if [ -s "$bundle" ]; then
  echo "$bundle"
  exit 0
fi
# shellcheck source=/dev/null
. "$(dirname "$0")/apt-fetch.sh"
deb=$(fetch_pinned_deb "$cache" "$package" "$version" "$sha256")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
find "$tmp/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 | LC_ALL=C sort -z | xargs -0 cat > "$bundle.tmp"
[ -s "$bundle.tmp" ] || { echo "ca-roots: no certificates in $deb" >&2; exit 1; }
mv "$bundle.tmp" "$bundle"
echo "$bundle"
