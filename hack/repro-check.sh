#!/usr/bin/env bash
# Builds the image twice, the second time in a hostile environment the
# pins must neutralise (a failing mkfs.erofs first on PATH, a broken
# liblz4 on LD_LIBRARY_PATH, an empty libseccomp.a in the host's cgo and
# pkg-config paths, GOAMD64=v3, other CGO_CFLAGS, another
# SOURCE_DATE_EPOCH, umask 077), and compares every output's SHA-256.
# Usage: hack/repro-check.sh [WORKDIR]   (default: a fresh temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
w=${1:-$(mktemp -d)}
mkdir -p "$w/fakebin" "$w/fakelib" "$w/fakeseccomp/lib" "$w/fakeseccomp/pc"
printf '#!/bin/sh\necho "the host mkfs.erofs was used" >&2; exit 1\n' > "$w/fakebin/mkfs.erofs"
chmod +x "$w/fakebin/mkfs.erofs"
echo broken > "$w/fakelib/liblz4.so.1"
ar rc "$w/fakeseccomp/lib/libseccomp.a"
printf 'Name: libseccomp\nDescription: empty\nVersion: 0\nLibs: -L%s -lseccomp\n' "$w/fakeseccomp/lib" > "$w/fakeseccomp/pc/libseccomp.pc"
[ -f "$w/dev/ca.crt" ] || go run ./attest devinit -dir "$w/dev" -listen 127.0.0.1:7443 >/dev/null
args=(-keys "$w/keys" -kernel "$(kernel/fetch.sh)" -nvidia "$(kernel/nvidia/build.sh)" -ca-roots "$(hack/ca-roots.sh)" -verifier 10.0.2.2:7443 -ca "$w/dev/ca.crt" -epoch 1767225600)
go run ./imager -out "$w/a" "${args[@]}" >/dev/null
(umask 077
 PATH="$w/fakebin:$PATH" LD_LIBRARY_PATH="$w/fakelib" SOURCE_DATE_EPOCH=1700000000 GOAMD64=v3 \
 CGO_CFLAGS="-O0 -DHOSTILE" CGO_LDFLAGS="-L$w/fakeseccomp/lib" PKG_CONFIG_PATH="$w/fakeseccomp/pc" \
 go run ./imager -out "$w/b" "${args[@]}" >/dev/null)
rc=0
for f in rigos.efi initrd.img system.img rigos.raw rigos.qcow2 manifest.json; do
  a=$(sha256sum < "$w/a/$f" | cut -c1-64) b=$(sha256sum < "$w/b/$f" | cut -c1-64)
  if [ "$a" = "$b" ]; then echo "same      $a  $f"; else echo "DIFFERENT $a $b  $f"; rc=1; fi
done
exit $rc
