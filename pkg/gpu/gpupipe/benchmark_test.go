package gpupipe

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// fakeBenchmark answers with set results and counts its runs.
type fakeBenchmark struct {
	results []gpucheck.Result
	err     error
	runs    int
}

func (f *fakeBenchmark) run(ctx context.Context) ([]gpucheck.Result, error) {
	f.runs++
	return f.results, f.err
}

// pipesServing connects a Client to Serve, given serve, over io.Pipes;
// the cleanup closes both and checks Serve's result.
func pipesServing(t *testing.T, src Source, serve []ServeOption, opts ...Option) *Client {
	t.Helper()
	reqR, reqW := io.Pipe()
	ansR, ansW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- Serve(context.Background(), src, reqR, ansW, serve...)
		ansW.Close()
	}()
	c := NewClient(ansR, reqW, opts...)
	t.Cleanup(func() {
		c.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v, want nil once the agent went away", err)
		}
	})
	return c
}

var _ BenchmarkFunc = (*fakeBenchmark)(nil).run

// The benchmark round trip, with its own deadline: the other requests'
// deadline (1ns here) does not apply to it.
func TestBenchmarkRoundTrip(t *testing.T) {
	b := &fakeBenchmark{results: []gpucheck.Result{
		{Index: 0, UUID: "GPU-0", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Correct: true, BandwidthGBps: 3012.5, FP32TFLOPS: 51.25},
		{Index: 1, UUID: "GPU-1", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Problem: "fma_loop computed wrongly: 1 of 8192 elements wrong: [4095]"},
	}}
	c := pipesServing(t, newFake(), []ServeOption{WithBenchmark(b.run)}, WithStartTimeout(time.Nanosecond), WithTimeout(time.Nanosecond))
	got, err := c.Benchmark(t.Context())
	if err != nil {
		t.Fatalf("Benchmark() = %v", err)
	}
	if diff := cmp.Diff(b.results, got); diff != "" {
		t.Errorf("Benchmark() differs (-want +got):\n%s", diff)
	}
	if b.runs != 1 {
		t.Errorf("the helper benchmarked %d times, want 1", b.runs)
	}
}

func TestBenchmarkErrors(t *testing.T) {
	// A helper without a benchmark says so; the Client goes on.
	c := pipesServing(t, newFake(), nil)
	if _, err := c.Benchmark(t.Context()); err == nil || !strings.Contains(err.Error(), "cannot benchmark") {
		t.Errorf("Benchmark() from a helper without one = %v, want it cannot benchmark", err)
	}
	if _, err := c.Health(); err != nil {
		t.Errorf("Health() after a refused benchmark = %v", err)
	}

	// A benchmark that fails as a whole is an error answer.
	b := &fakeBenchmark{err: gpucheck.ErrNoDriver}
	c = pipesServing(t, newFake(), []ServeOption{WithBenchmark(b.run)})
	if _, err := c.Benchmark(t.Context()); err == nil || !strings.Contains(err.Error(), "GPU helper: benchmark: no NVIDIA driver") {
		t.Errorf("Benchmark() with no driver = %v, want the helper's no-driver error", err)
	}

	// No GPU answers an empty list, not null.
	c = pipesServing(t, newFake(), []ServeOption{WithBenchmark((&fakeBenchmark{}).run)})
	if got, err := c.Benchmark(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("Benchmark() of no GPU = %v, %v; want none, nil", got, err)
	}
}

func TestBenchmarkTimeout(t *testing.T) {
	c, h := handDriven(t, WithBenchmarkTimeout(50*time.Millisecond), WithStartTimeout(time.Nanosecond))
	go h.req.ReadString('\n') // and never answers
	if _, err := c.Benchmark(t.Context()); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "no answer to benchmark within 50ms") {
		t.Fatalf("Benchmark() from a hanging helper = %v, want %v after 50ms", err, ErrTimeout)
	}
	if _, err := c.Health(); !errors.Is(err, ErrTimeout) {
		t.Errorf("Health() after a timeout = %v, want %v", err, ErrTimeout)
	}
}

// A benchmark no longer awaited stops the helper: its answer would be
// taken for the next request's.
func TestBenchmarkAbandoned(t *testing.T) {
	c, h := handDriven(t)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		h.req.ReadString('\n')
		cancel() // and never answers
	}()
	if _, err := c.Benchmark(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Benchmark(cancelled) = %v, want %v", err, context.Canceled)
	}
	if _, err := c.Health(); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "benchmark request abandoned") {
		t.Errorf("Health() after an abandoned benchmark = %v, want the helper stopped", err)
	}
}

func TestBenchmarkBadAnswers(t *testing.T) {
	for _, line := range []string{
		`{"gpus":[]}`, `{"benchmarks":null}`, `{"benchmarks":[],"health":[]}`, `{"benchmarks":[{"correct":"yes"}]}`,
	} {
		c, h := handDriven(t)
		h.answer(line + "\n")
		if _, err := c.Benchmark(t.Context()); !errors.Is(err, ErrProtocol) {
			t.Errorf("benchmark answered with %s = %v, want %v", line, err, ErrProtocol)
		}
	}
	c, h := handDriven(t)
	h.answer(`{"benchmarks":[]}` + "\n")
	if _, err := c.Health(); !errors.Is(err, ErrProtocol) {
		t.Errorf("health answered with benchmarks = %v, want %v", err, ErrProtocol)
	}
}
