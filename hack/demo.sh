#!/usr/bin/env bash
# The RigOS demo: builds a RigOS image, starts the verifier (SQLite) on the
# host, boots the image in QEMU (OVMF with Secure Boot and RigOS's keys,
# swtpm, TCG) and shows the node enrol, become trusted and then be
# spot-checked, then runs a container on the trusted node through the
# verifier and shows the next appraisal naming it. Prints how long boot →
# trusted took. Stops everything it started. DEMO_CHECKS spot checks after
# the first verdict (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bin}
DIR=${DEMO_DIR:-.demo}
OUT=${DEMO_OUT:-out}
KEYS=${KEYS:-.cache/keys}
CHECKS=${DEMO_CHECKS:-2}
PORT=${DEMO_PORT:-7443}

kernel=$(kernel/fetch.sh)
rm -rf "$DIR"
# The verifier's TLS CA is baked into the image, so it comes first; it
# trusts the manifests the imager signs (the imager creates that key).
"$BIN/attest" devinit -dir "$DIR" -listen "127.0.0.1:$PORT" -mean 4s -min 2s -max 10s -deadline 30s \
  -manifest-key "$KEYS/manifest.pub"
echo "demo: building the image"
"$BIN/imager" -out "$OUT" -keys "$KEYS" -kernel "$kernel" -verifier "10.0.2.2:$PORT" -ca "$DIR/ca.crt"
cp "$OUT/manifest.json" "$DIR/manifests/image.json"

. hack/lib.sh
start_verifier
echo "demo: verifier listening on 127.0.0.1:$PORT; the guest reaches it as 10.0.2.2:$PORT"

"$BIN/attest" watch -admin "$DIR/admin.sock" -n $((CHECKS + 2)) >"$DIR/watch.log" &
watch=$!
start=$(date +%s%N)
"$BIN/runvm" -image "$OUT/rigos.qcow2" -keys "$KEYS" -memory 512M -timeout 10m >"$DIR/console.log" 2>&1 &
pids+=($!)
echo "demo: booting the image in QEMU (TCG; console in $DIR/console.log)"
tail -f "$DIR/watch.log" --pid=$watch &
tailpid=$!
if ! timeout 480 tail --pid=$watch -f /dev/null; then echo "demo: timed out"; exit 1; fi
wait $tailpid 2>/dev/null || true
"$BIN/attest" nodes -admin "$DIR/admin.sock"
trusted=$(grep -m1 -- '-> trusted' "$DIR/watch.log" | cut -d' ' -f1) || { echo "demo: the node never became trusted"; exit 1; }
took=$(( ($(date -d "$trusted" +%s%N) - start) / 1000000 ))
echo "demo: boot → trusted in $((took / 1000)).$(( (took % 1000) / 100 )) s (QEMU start to the first passing appraisal)"

node=$(grep -m1 -- '-> trusted' "$DIR/watch.log" | awk '{print $2}')
echo "demo: running a container on $node (an OCI image archive sent down the node's stream)"
go run ./hack/mkworkload -o "$DIR/workload.tar" >/dev/null
"$BIN/attest" run -admin "$DIR/admin.sock" -node "$node" -id hello -archive "$DIR/workload.tar" \
  -memory 64M -cpus 0.5 -- /workload hello ||
  { echo "demo: the workload failed; the end of the node's console:"; tail -n 30 "$DIR/console.log"; exit 1; }
echo "demo: waiting for the next spot check, which names the workload from the node's runtime log"
# Started after the workload ran (it was measured before it started), so
# the change it waits for is an appraisal of a log that holds it.
"$BIN/attest" watch -admin "$DIR/admin.sock" -n 1 >"$DIR/watch2.log" &
watch=$!
pids+=($watch)
if ! timeout 120 tail --pid=$watch -f /dev/null; then echo "demo: no spot check within 2 minutes"; exit 1; fi
detail=$("$BIN/attest" node -admin "$DIR/admin.sock" -id "$node")
echo "$detail" | sed -n '1,8p'   # sed reads it all: no SIGPIPE under pipefail
echo "$detail" | grep -q "measured workload hello@sha256:" ||
  { echo "demo: the appraisal did not name the workload"; exit 1; }
