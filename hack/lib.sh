# Shared by the demo scripts: process cleanup and starting the verifier.
# Expects BIN, DIR and PORT to be set.

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_verifier runs attest with $DIR/attest.json and waits for its
# admin socket.
start_verifier() {
  "$BIN/attest" serve -config "$DIR/attest.json" 2>"$DIR/attest.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$DIR/admin.sock" ] && break; sleep 0.1; done
  [ -S "$DIR/admin.sock" ] || { echo "demo: verifier did not start:"; cat "$DIR/attest.log"; exit 1; }
}
