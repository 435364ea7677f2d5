package gpucheck

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// small keeps the fake's Go arithmetic quick.
func small(d driver) Options {
	return Options{SAXPYElements: 10000, FMATrips: 3, CopyBytes: 64 << 20, CopyRepeats: 2, driver: d}
}

func fakeH100(i int) *fakeGPU {
	return &fakeGPU{
		info: deviceInfo{name: "NVIDIA H100 80GB HBM3", uuid: "GPU-" + strings.Repeat("0", 35) + string(rune('0'+i)), memory: 80 << 30, sms: 1},
		free: 70 << 30,
		took: 10 * time.Millisecond,
	}
}

func TestRunCorrectGPUs(t *testing.T) {
	d := &fakeDriver{gpus: []*fakeGPU{fakeH100(0), fakeH100(1)}}
	got, err := Run(context.Background(), small(d))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	threads := fmaBlocksPerSM * fmaBlock
	flops := float64(threads) * 3 * fmaUnroll * fmaChains * 2 * 2
	var want []Result
	for i, g := range d.gpus {
		want = append(want, Result{
			Index: i, UUID: g.info.uuid, Name: g.info.name, MemoryBytes: 80 << 30, Correct: true,
			BandwidthGBps: 2 * float64(64<<20) * 2 / 0.01 / 1e9,
			FP32TFLOPS:    flops / 0.01 / 1e12,
		})
		if !g.closed {
			t.Errorf("GPU %d was not closed", i)
		}
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b) })); diff != "" {
		t.Errorf("Run() mismatch (-want +got):\n%s", diff)
	}
}

// The corrupt hook changes what was read back from the GPU: Run must
// report the GPU incorrect and name the element, never pass it.
func TestRunCatchesCorruptedResult(t *testing.T) {
	d := &fakeDriver{gpus: []*fakeGPU{fakeH100(0)}}
	o := small(d)
	o.corrupt = func(v []float32) { v[1234]++ }
	got, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	r := got[0]
	if r.Correct {
		t.Fatalf("Run(corrupted results) = %+v, want Correct false", r)
	}
	for _, want := range []string{"saxpy computed wrongly: 1 of 10000 elements wrong: [1234]", "fma_loop computed wrongly: 1 of 8192 elements wrong: [1234]"} {
		if !strings.Contains(r.Problem, want) {
			t.Errorf("Problem = %q, want it to contain %q", r.Problem, want)
		}
	}
}

// A GPU whose FMA results are wrong fails alone; the others pass.
func TestRunFaultyGPU(t *testing.T) {
	bad := fakeH100(1)
	bad.fault = func(v []float32) {
		if len(v) == fmaBlocksPerSM*fmaBlock { // the fma_loop output only
			v[4095] = math.Float32frombits(math.Float32bits(v[4095]) ^ 1<<3)
		}
	}
	d := &fakeDriver{gpus: []*fakeGPU{fakeH100(0), bad, fakeH100(2)}}
	got, err := Run(context.Background(), small(d))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	for i, r := range got {
		if want := i != 1; r.Correct != want {
			t.Errorf("GPU %d: Correct = %v, want %v (%s)", i, r.Correct, want, r.Problem)
		}
	}
	if p := got[1].Problem; !strings.Contains(p, "fma_loop computed wrongly") || !strings.Contains(p, "[4095]") || strings.Contains(p, "saxpy") {
		t.Errorf("GPU 1 Problem = %q, want only fma_loop's element 4095", p)
	}
	if got[1].FP32TFLOPS != 0 {
		t.Errorf("GPU 1 FP32TFLOPS = %v, want none for a GPU that computed wrongly", got[1].FP32TFLOPS)
	}
}

func TestRunGPUThatDoesNotOpen(t *testing.T) {
	bad := fakeH100(0)
	bad.openErr = errors.New("cuCtxCreate_v2: out of memory (CUDA_ERROR_OUT_OF_MEMORY)")
	d := &fakeDriver{gpus: []*fakeGPU{bad, fakeH100(1)}}
	got, err := Run(context.Background(), small(d))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if got[0].Correct || got[0].Problem != "opening the GPU: cuCtxCreate_v2: out of memory (CUDA_ERROR_OUT_OF_MEMORY)" || got[0].Name == "" {
		t.Errorf("GPU 0 = %+v, want incorrect with the open error, and named", got[0])
	}
	if !got[1].Correct {
		t.Errorf("GPU 1 = %+v, want correct", got[1])
	}
}

func TestRunLittleFreeMemory(t *testing.T) {
	g := fakeH100(0)
	g.free = 100 << 20
	got, err := Run(context.Background(), small(&fakeDriver{gpus: []*fakeGPU{g}}))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if got[0].Correct || !strings.Contains(got[0].Problem, "bandwidth: only 100 MiB of GPU memory free") {
		t.Errorf("Run(100 MiB free) = %+v, want a bandwidth problem", got[0])
	}
}

func TestRunNoGPU(t *testing.T) {
	if _, err := Run(context.Background(), small(&fakeDriver{})); !errors.Is(err, ErrNoGPU) {
		t.Errorf("Run(no GPU) = %v, want ErrNoGPU", err)
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g := fakeH100(0)
	if _, err := Run(ctx, small(&fakeDriver{gpus: []*fakeGPU{g}})); !errors.Is(err, context.Canceled) {
		t.Errorf("Run(cancelled) = %v, want context.Canceled", err)
	}
	if g.opened {
		t.Error("Run(cancelled) opened a GPU")
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("Options{}.Validate() = %v, want nil", err)
	}
	err := Options{SAXPYElements: -1, FMATrips: MaxFMATrips + 1, CopyBytes: 1, CopyRepeats: -1}.Validate()
	for _, want := range []string{"SAXPYElements -1", "FMATrips 32769", "CopyBytes 1", "CopyRepeats -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to report %s", err, want)
		}
	}
	if _, err := Run(context.Background(), Options{FMATrips: -1}); err == nil {
		t.Error("Run(invalid options) = nil error")
	}
}

func TestCopySize(t *testing.T) {
	for _, tc := range []struct {
		want, free, size uint64
		ok               bool
	}{
		{1 << 30, 80 << 30, 1 << 30, true},
		{1 << 30, 2 << 30, 512 << 20, true},
		{1 << 30, 1<<30 + 12345, 256 << 20, true},
		{1 << 30, 255 << 20, 0, false},
	} {
		size, err := copySize(tc.want, tc.free)
		if size != tc.size || (err == nil) != tc.ok {
			t.Errorf("copySize(%d, %d) = %d, %v; want %d, ok %v", tc.want, tc.free, size, err, tc.size, tc.ok)
		}
	}
}

func TestFormatUUID(t *testing.T) {
	u := [16]byte{0x1d, 0x6c, 0x3a, 0x08, 0x5f, 0x1e, 0x22, 0x4b, 0x90, 0x0a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56}
	if got, want := formatUUID(u), "GPU-1d6c3a08-5f1e-224b-900a-bcdef0123456"; got != want {
		t.Errorf("formatUUID() = %s, want %s", got, want)
	}
}
