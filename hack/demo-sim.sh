#!/usr/bin/env bash
# The RigOS demo on embedded defaults: a verifier (SQLite) and an agent on
# the TPM simulator after a simulated measured boot. Shows the node enrol,
# become trusted, and then be spot-checked at random times. Ends by itself
# after DEMO_CHECKS spot checks (default 5) and stops every process it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bin}
# The simulator is in development builds only (-tags sim).
mkdir -p "$BIN/sim"
go build -tags sim -o "$BIN/sim/attest" ./attest
go build -tags sim -o "$BIN/sim/agent" ./agent
BIN=$BIN/sim
DIR=${DEMO_DIR:-.demo}
CHECKS=${DEMO_CHECKS:-5}
PORT=${DEMO_PORT:-7443}

rm -rf "$DIR"
"$BIN/attest" devinit -dir "$DIR" -listen "127.0.0.1:$PORT"
. hack/lib.sh
start_verifier
echo "demo: verifier listening on 127.0.0.1:$PORT (log: $DIR/attest.log)"

# Subscribe before the agent starts so no change is missed.
"$BIN/attest" watch -admin "$DIR/admin.sock" -n $((CHECKS + 2)) >"$DIR/watch.log" &
watch=$!
start=$(date +%s%N)
"$BIN/agent" -config "$DIR/agent.json" 2>"$DIR/agent.log" &
pids+=($!)
echo "demo: agent started on the TPM simulator (log: $DIR/agent.log)"
echo "demo: state changes (enrol, first appraisal, then $CHECKS random spot checks):"
tail -f "$DIR/watch.log" --pid=$watch &
tailpid=$!
if ! timeout 120 tail --pid=$watch -f /dev/null; then
  echo "demo: timed out"; exit 1
fi
wait $tailpid 2>/dev/null || true
end=$(date +%s%N)
echo
"$BIN/attest" nodes -admin "$DIR/admin.sock"
trusted_at=$(grep -m1 -- '-> trusted' "$DIR/watch.log" | cut -d' ' -f1)
echo "demo: node trusted at $trusted_at; enrolment and $CHECKS spot checks took $(( (end - start) / 1000000 )) ms"
grep -q -- '-> trusted' "$DIR/watch.log"
