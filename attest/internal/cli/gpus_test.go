package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

func TestGPULines(t *testing.T) {
	h100 := func(i uint32, uuid string, healthy bool, problems ...string) *apiv1.GPU {
		return &apiv1.GPU{Index: i, Uuid: uuid, Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Healthy: healthy, Problems: problems}
	}
	const wrong = "fma_loop computed wrongly: 1 of 8192 elements wrong: [4095]"
	for _, tc := range []struct {
		name string
		r    *apiv1.GPUReport
		want []string
	}{
		{"none", nil, []string{"GPUs: no report (the node offers none, or is not connected)"}},
		{"benchmarked", &apiv1.GPUReport{
			InventoryDigest: "0123456789abcdef0123456789abcdef",
			Gpus:            []*apiv1.GPU{h100(0, "GPU-a", true), h100(1, "GPU-b", false, "benchmark: wrong result: "+wrong)},
			Benchmarks: []*apiv1.GPUBenchmark{
				{Uuid: "GPU-a", Correct: true, BandwidthGbps: 3012.4, Fp32Tflops: 51.26},
				{Uuid: "GPU-b", Problem: wrong, BandwidthGbps: 2998},
				{Uuid: "GPU-c", Correct: true, BandwidthGbps: 1950, Fp32Tflops: 19.5},
			},
		}, []string{
			"GPUs (reported by the node, not attested): 2, inventory 0123456789abcdef, at -",
			"  GPU 0 GPU-a NVIDIA H100 80GB HBM3 80 GiB: healthy; benchmark 3012 GB/s, 51.3 TFLOPS FP32, correct",
			"  GPU 1 GPU-b NVIDIA H100 80GB HBM3 80 GiB: UNHEALTHY (benchmark: wrong result: " + wrong + "); benchmark 2998 GB/s, 0.0 TFLOPS FP32, WRONG: " + wrong,
			"  GPU-c (not in the inventory): benchmark 1950 GB/s, 19.5 TFLOPS FP32, correct",
		}},
		{"not benchmarked", &apiv1.GPUReport{InventoryDigest: "ab", Gpus: []*apiv1.GPU{h100(0, "GPU-a", false, "Xid 79")}}, []string{
			"GPUs (reported by the node, not attested): 1, inventory ab, at -",
			"  GPU 0 GPU-a NVIDIA H100 80GB HBM3 80 GiB: UNHEALTHY (Xid 79)",
		}},
		{"benchmark failed", &apiv1.GPUReport{Gpus: []*apiv1.GPU{h100(0, "GPU-a", true)}, Error: "NVML: Unknown Error", BenchmarkError: "GPU helper: benchmark: no libcuda.so.*"}, []string{
			"GPUs (reported by the node, not attested): 1, inventory -, at -",
			"  cannot read GPUs: NVML: Unknown Error",
			"  GPU 0 GPU-a NVIDIA H100 80GB HBM3 80 GiB: healthy; no benchmark",
			"  benchmark failed: GPU helper: benchmark: no libcuda.so.*",
		}},
	} {
		if diff := cmp.Diff(tc.want, gpuLines(tc.r)); diff != "" {
			t.Errorf("gpuLines(%s) differs (-want +got):\n%s", tc.name, diff)
		}
	}
}
