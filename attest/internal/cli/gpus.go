package cli

import (
	"fmt"
	"strings"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// gpuLines describes a node's latest GPU report for `attest node`: a
// line per GPU with its health and benchmark (bandwidth, FP32, whether
// it computed correctly). Like the hardware inventory, the report is the
// node's own claim, not evidence: the first line says so.
func gpuLines(r *apiv1.GPUReport) []string {
	if r == nil {
		return []string{"GPUs: no report (the node offers none, or is not connected)"}
	}
	digest := r.GetInventoryDigest()
	switch {
	case digest == "":
		digest = "-"
	case len(digest) > 16:
		digest = digest[:16]
	}
	lines := []string{fmt.Sprintf("GPUs (reported by the node, not attested): %d, inventory %s, at %s",
		len(r.GetGpus()), digest, when(r.GetUnixMs()))}
	if e := r.GetError(); e != "" {
		lines = append(lines, "  cannot read GPUs: "+e)
	}
	bench := map[string]*apiv1.GPUBenchmark{}
	for _, b := range r.GetBenchmarks() {
		bench[b.GetUuid()] = b
	}
	for _, g := range r.GetGpus() {
		l := fmt.Sprintf("  GPU %d %s %s %s: ", g.GetIndex(), g.GetUuid(), g.GetName(), bytesIEC(g.GetMemoryBytes()))
		if g.GetHealthy() {
			l += "healthy"
		} else {
			l += "UNHEALTHY (" + strings.Join(g.GetProblems(), "; ") + ")"
		}
		if b, ok := bench[g.GetUuid()]; ok {
			l += "; " + benchmarkText(b)
			delete(bench, g.GetUuid())
		} else if len(r.GetBenchmarks()) > 0 || r.GetBenchmarkError() != "" {
			l += "; no benchmark"
		}
		lines = append(lines, l)
	}
	// Benchmarks of GPUs the inventory lacks (hardware changed since the
	// node measured it), in report order.
	for _, b := range r.GetBenchmarks() {
		if _, ok := bench[b.GetUuid()]; ok {
			lines = append(lines, fmt.Sprintf("  %s (not in the inventory): %s", b.GetUuid(), benchmarkText(b)))
		}
	}
	if e := r.GetBenchmarkError(); e != "" {
		lines = append(lines, "  benchmark failed: "+e)
	}
	return lines
}

// benchmarkText is one GPU's benchmark: its figures and whether it
// computed correctly, with the problem when not.
func benchmarkText(b *apiv1.GPUBenchmark) string {
	s := fmt.Sprintf("benchmark %.0f GB/s, %.1f TFLOPS FP32, ", b.GetBandwidthGbps(), b.GetFp32Tflops())
	if b.GetCorrect() {
		return s + "correct"
	}
	return s + "WRONG: " + b.GetProblem()
}
