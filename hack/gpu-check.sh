#!/usr/bin/env bash
# Checks this machine's NVIDIA GPUs with RigOS's own code, in a few
# minutes (well under 8 on eight GPUs):
#   1. go test -run TestRealDriver: NVML inventory and health (pkg/gpu),
#      and the GPU check on the real driver (pkg/gpu/gpucheck), which also
#      shows a corrupted result being caught;
#   2. gpucheck, built and run on the host;
#   3. gpucheck in a container through RigOS's own containerd, runc shim
#      and runc, built and configured as in the image, given GPU 0 by CDI
#      name (go test -run TestRealGPUContainer ./agent/internal/workload);
#   4. a table: GPU, driver version, bandwidth, FP32, result, against the
#      datasheet figures.
# Needs Go, a C compiler (gpucheck uses cgo to load libcuda.so.1), root
# and cgroup v2 for step 3, and the pinned build inputs the image uses
# (fetched into ~/.cache/rigos on first use); the GPU needs only its
# driver, no CUDA toolkit.
#
# Exit status: 0 when every GPU computed correctly; 1 when one did not or
# a step failed; 2 when there is no NVIDIA driver or GPU, saying at which
# step it stopped.
#
#   hack/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# no_gpu STEP REASON: stop, saying where and why.
no_gpu() {
  echo "gpu-check: stopped at step $1: $2" >&2
  exit 2
}
command -v go >/dev/null || { echo "gpu-check: needs Go (https://go.dev/dl)" >&2; exit 1; }

echo "== step 1: go test -run TestRealDriver -v ./pkg/gpu/..."
rc=0
go test -count=1 -timeout 4m -run TestRealDriver -v ./pkg/gpu/... >"$work/test.log" 2>&1 || rc=$?
cat "$work/test.log"
# A skipped TestRealDriver is a machine without a driver or GPU: the line
# before the SKIP says why.
if skipped=$(grep -B1 -m1 -- '^--- SKIP: TestRealDriver ' "$work/test.log"); then
  reason=$(head -1 <<<"$skipped" | sed -E 's/^[[:space:]]*[a-z_]+\.go:[0-9]+: //')
  no_gpu 1 "no NVIDIA driver or GPU (TestRealDriver skipped: $reason)"
fi
[ "$rc" = 0 ] || { echo "gpu-check: step 1 failed (go test exit $rc)" >&2; exit 1; }

echo "== step 2: gpucheck on the host"
go build -o "$work/gpucheck" ./gpucheck
rc=0
"$work/gpucheck" -f '{{.Index}}|{{.Name}}|{{.UUID}}|{{printf "%.0f" .BandwidthGBps}}|{{printf "%.1f" .FP32TFLOPS}}|{{.Correct}}|{{.Problem}}' \
  >"$work/results" 2>"$work/gpucheck.err" || rc=$?
cat "$work/gpucheck.err" >&2
case $rc in
  0 | 1) ;;
  3) no_gpu 2 "$(sed 's/^gpucheck: //' "$work/gpucheck.err")" ;;
  *) echo "gpu-check: step 2: gpucheck exited $rc" >&2; exit 1 ;;
esac
checked=$rc
[ -s "$work/results" ] || { echo "gpu-check: step 2: gpucheck checked no GPU (exit $rc)" >&2; exit 1; }

echo "== step 3: gpucheck in a container, GPU 0 by CDI name, through RigOS's containerd"
rc=0
RIGOS_GPU_CONTAINER=1 go test -count=1 -timeout 6m -run TestRealGPUContainer -v ./agent/internal/workload \
  >"$work/container.log" 2>&1 || rc=$?
cat "$work/container.log"
[ "$rc" = 0 ] || { echo "gpu-check: step 3 failed (go test exit $rc)" >&2; exit 1; }
# The container's line for GPU 0 must say what step 2 said of the same
# GPU (by UUID): correct, or the same failure.
container=$(sed -n 's/^gpucontainer: //p' "$work/container.log" | head -1)
IFS='|' read -r _ _ cuuid _ _ ccorrect _ <<<"$container"
hcorrect=$(awk -F'|' -v u="$cuuid" '$3 == u { print $6 }' "$work/results")
if [ -z "$cuuid" ] || [ "$ccorrect" != "$hcorrect" ]; then
  echo "gpu-check: step 3: the container's result ($container) differs from the host's for that GPU ($hcorrect)" >&2
  exit 1
fi
echo "container: $container"

echo "== step 4: results"
# The driver version of each GPU, by UUID (CUDA and nvidia-smi may number
# GPUs differently), from nvidia-smi or else the kernel module.
declare -A driver
if command -v nvidia-smi >/dev/null; then
  while IFS=', ' read -r uuid version; do
    driver[$uuid]=$version
  done < <(nvidia-smi --query-gpu=uuid,driver_version --format=csv,noheader 2>/dev/null || true)
fi
module=$(sed -nE 's/.*Kernel Module[^0-9]*([0-9][0-9.]+).*/\1/p' /proc/driver/nvidia/version 2>/dev/null || true)

# datasheet NAME: memory bandwidth (GB/s), FP32 non-tensor TFLOPS and the
# part, for the GPUs whose datasheet figures are known here (SXM parts).
datasheet() {
  case $1 in
    *H100*HBM3* | *H100*SXM*) echo "3350 67 H100-SXM" ;;
    *H200*NVL*) echo "- - -" ;;
    *H200*) echo "4800 67 H200-SXM" ;;
    *) echo "- - -" ;;
  esac
}
# percent GOT SHEET: GOT as a share of SHEET.
percent() {
  if [ "$2" = - ]; then echo "-"; else awk -v g="$1" -v s="$2" 'BEGIN { printf "%.0f%%", 100 * g / s }'; fi
}

fmt='%-3s  %-24s  %-10s  %9s  %6s  %8s  %6s  %-8s  %s\n'
# shellcheck disable=SC2059 # the format is the table's, on purpose
printf "$fmt" GPU NAME DRIVER "GB/s" "%sheet" TFLOPS "%sheet" DATASHEET RESULT
while IFS='|' read -r index name uuid gbps tflops correct problem; do
  read -r sheet_bw sheet_fp32 part <<<"$(datasheet "$name")"
  result=correct
  [ "$correct" = true ] || result="FAILED: $problem"
  # shellcheck disable=SC2059
  printf "$fmt" "$index" "$name" "${driver[$uuid]:-${module:-?}}" "$gbps" "$(percent "$gbps" "$sheet_bw")" \
    "$tflops" "$(percent "$tflops" "$sheet_fp32")" "$part" "$result"
done <"$work/results"
cat <<'EOF'

Datasheet: H100 SXM: 3.35 TB/s HBM3, 67 TFLOPS FP32 (non-tensor); H200 SXM: 4.8 TB/s HBM3e,
67 TFLOPS FP32. GB/s counts each copied byte as read and written (as CUDA's bandwidthTest does).
A copy does not reach the datasheet's peak bandwidth, nor the FMA loop the FP32 peak below the
top boost clock: the comparison is a sanity check, not a pass mark. A wrong answer is.
EOF
if [ "$checked" != 0 ]; then
  echo "gpu-check: a GPU failed the check" >&2
  exit 1
fi
echo "gpu-check: every GPU computed correctly"
