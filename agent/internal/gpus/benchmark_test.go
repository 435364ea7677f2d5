package gpus

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// benchSource is a GPU helper with set answers: like the helper, it
// answers one request at a time, so Health waits for a benchmark.
type benchSource struct {
	pipe sync.Mutex // one request at a time

	mu      sync.Mutex
	inv     []gpu.GPU
	results []gpucheck.Result
	err     error
	runs    int
	// hold, when set, keeps Benchmark running until it is closed;
	// started gets a value when Benchmark starts.
	hold    chan struct{}
	started chan struct{}
}

var (
	_ Source      = (*benchSource)(nil)
	_ Benchmarker = (*benchSource)(nil)
)

func newBenchSource(n int) *benchSource {
	b := &benchSource{}
	b.setGPUs(n, -1)
	return b
}

// setGPUs makes the source n GPUs, GPU wrong computing wrongly (-1:
// none).
func (b *benchSource) setGPUs(n, wrong int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inv, b.results = nil, nil
	for i := range n {
		uuid := "GPU-" + string(rune('0'+i))
		b.inv = append(b.inv, gpu.GPU{Index: i, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", Minor: i})
		r := gpucheck.Result{Index: i, UUID: uuid, Correct: true, BandwidthGBps: 3000 + float64(i), FP32TFLOPS: 50}
		if i == wrong {
			r = gpucheck.Result{Index: i, UUID: uuid, Problem: "fma_loop computed wrongly: 1 of 8192 elements wrong: [4095]", BandwidthGBps: 3000}
		}
		b.results = append(b.results, r)
	}
}

func (b *benchSource) Inventory() ([]gpu.GPU, error) {
	b.pipe.Lock()
	defer b.pipe.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inv, nil
}

func (b *benchSource) Health() ([]gpu.Health, error) {
	b.pipe.Lock()
	defer b.pipe.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	var h []gpu.Health
	for _, g := range b.inv {
		h = append(h, gpu.Health{UUID: g.UUID, Healthy: true})
	}
	return h, nil
}

func (b *benchSource) WatchXids(ctx context.Context) error { <-ctx.Done(); return nil }

func (b *benchSource) Benchmark(ctx context.Context) ([]gpucheck.Result, error) {
	b.pipe.Lock()
	defer b.pipe.Unlock()
	b.mu.Lock()
	b.runs++
	hold, started := b.hold, b.started
	rs, err := append([]gpucheck.Result(nil), b.results...), b.err
	b.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if hold != nil {
		<-hold
	}
	return rs, err
}

func (b *benchSource) benchmarks() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.runs
}

var benchTime = time.UnixMilli(1_700_000_000_000)

// startBench starts the service on src with its hardware watch ticked
// by the returned function, which returns once the watch has done all
// it was asked before (a benchmark included).
func startBench(t *testing.T, src Source) (*Service, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s, err := start(ctx, src, func(string, []byte) error { return nil }, t.TempDir(), t.TempDir(), slog.New(slog.DiscardHandler), func() time.Time { return benchTime })
	if err != nil {
		t.Fatal(err)
	}
	tick := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watchHardware(ctx, tick)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s, func() { tick <- time.Time{} }
}

// The service benchmarks at start and again only when the inventory
// changed; a GPU that computed wrongly turns unhealthy, is refused to
// workloads and says why; every report carries the latest results.
func TestBenchmarkAtStartAndOnHardwareChange(t *testing.T) {
	src := newBenchSource(2)
	s, tick := startBench(t, src)
	tick() // the start's benchmark is done
	if n := src.benchmarks(); n != 1 {
		t.Fatalf("benchmarks after start = %d, want 1", n)
	}
	r := s.Report(benchTime).GetGpuReport()
	want := []*apiv1.GPUBenchmark{
		{Uuid: "GPU-0", Correct: true, BandwidthGbps: 3000, Fp32Tflops: 50, UnixMs: benchTime.UnixMilli()},
		{Uuid: "GPU-1", Correct: true, BandwidthGbps: 3001, Fp32Tflops: 50, UnixMs: benchTime.UnixMilli()},
	}
	if diff := cmp.Diff(want, r.GetBenchmarks(), protocmp.Transform()); diff != "" {
		t.Errorf("report's benchmarks differ (-want +got):\n%s", diff)
	}
	for _, g := range r.GetGpus() {
		if !g.GetHealthy() || !s.Healthy(int(g.GetIndex())) {
			t.Errorf("GPU %d unhealthy after a passed benchmark: %v", g.GetIndex(), g.GetProblems())
		}
	}

	tick()
	tick() // the first tick's inventory is read and compared
	if n := src.benchmarks(); n != 1 {
		t.Errorf("benchmarks with the inventory unchanged = %d, want 1", n)
	}

	src.setGPUs(3, 1) // a GPU more, and GPU 1 now computes wrongly
	tick()
	tick()
	if n := src.benchmarks(); n != 2 {
		t.Fatalf("benchmarks after the inventory changed = %d, want 2", n)
	}
	// Refused to workloads at once, before any report.
	if s.Healthy(1) {
		t.Error("Healthy(1) = true after GPU 1 computed wrongly")
	}
	if !s.Healthy(0) {
		t.Error("Healthy(0) = false, want true")
	}
	r = s.Report(benchTime).GetGpuReport()
	if len(r.GetBenchmarks()) != 3 || r.GetBenchmarks()[1].GetCorrect() {
		t.Errorf("report's benchmarks = %v, want 3 with GPU 1 wrong", r.GetBenchmarks())
	}
	g1 := r.GetGpus()[1]
	if wantP := "benchmark: wrong result: fma_loop computed wrongly: 1 of 8192 elements wrong: [4095]"; g1.GetHealthy() || !cmp.Equal(g1.GetProblems(), []string{wantP}) {
		t.Errorf("GPU 1 in the report = healthy %v, problems %q; want unhealthy with %q", g1.GetHealthy(), g1.GetProblems(), wantP)
	}
	if s.Healthy(1) {
		t.Error("Healthy(1) = true after a report")
	}
}

// Reports made while the helper benchmarks do not wait for it: they
// carry the last health reading.
func TestReportWhileBenchmarking(t *testing.T) {
	src := newBenchSource(1)
	src.hold, src.started = make(chan struct{}), make(chan struct{}, 1)
	s, tick := startBench(t, src)
	<-src.started
	reported := make(chan *apiv1.GPUReport, 1)
	go func() { reported <- s.Report(benchTime).GetGpuReport() }()
	select {
	case r := <-reported:
		if len(r.GetGpus()) != 1 || !r.GetGpus()[0].GetHealthy() || len(r.GetBenchmarks()) != 0 || r.GetError() != "" {
			t.Errorf("report during the first benchmark = %v, want GPU 0 healthy from the last reading, no benchmark yet", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Report waited for the benchmark")
	}
	// No workload gets a GPU before its first benchmark ended.
	if s.Healthy(0) {
		t.Error("Healthy(0) = true during the first benchmark")
	}
	close(src.hold)
	tick()
	if r := s.Report(benchTime).GetGpuReport(); len(r.GetBenchmarks()) != 1 {
		t.Errorf("report after the benchmark = %v, want its result", r)
	}
	if !s.Healthy(0) {
		t.Error("Healthy(0) = false after a passed benchmark")
	}
}

// A benchmark that fails as a whole is reported, and leaves the GPUs
// healthy: it says nothing about them.
func TestBenchmarkError(t *testing.T) {
	src := newBenchSource(1)
	src.results, src.err = nil, errors.New("GPU helper: benchmark: no libcuda.so.* in /usr/lib/nvidia/lib: no NVIDIA driver")
	s, tick := startBench(t, src)
	tick()
	r := s.Report(benchTime).GetGpuReport()
	if !strings.Contains(r.GetBenchmarkError(), "no libcuda.so.*") || len(r.GetBenchmarks()) != 0 || !r.GetGpus()[0].GetHealthy() || !s.Healthy(0) {
		t.Errorf("report after a failed benchmark = %v, want the error and GPU 0 healthy", r)
	}
}

// A source that cannot benchmark (NVML in the agent) never is, and its
// reports say nothing about benchmarks.
func TestNoBenchmarker(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := Start(ctx, fakeSource{}, func(string, []byte) error { return nil }, t.TempDir(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s.bench != nil {
		t.Fatal("a source without Benchmark taken for a Benchmarker")
	}
	if r := s.Report(benchTime).GetGpuReport(); len(r.GetBenchmarks()) != 0 || r.GetBenchmarkError() != "" {
		t.Errorf("report = %v, want nothing about benchmarks", r)
	}
}

func TestBenchmarkProblem(t *testing.T) {
	for _, tc := range []struct{ problem, want string }{
		{"saxpy computed wrongly: 1 of 10000 elements wrong: [1234]", "benchmark: wrong result: saxpy computed wrongly: 1 of 10000 elements wrong: [1234]"},
		{"opening the GPU: cuCtxCreate_v2: out of memory", "benchmark: failed: opening the GPU: cuCtxCreate_v2: out of memory"},
	} {
		if got := benchmarkProblem(tc.problem); got != tc.want {
			t.Errorf("benchmarkProblem(%q) = %q, want %q", tc.problem, got, tc.want)
		}
	}
}
