package gpucheck

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// runReal runs the check on the real driver, skipping, with the reason,
// where there is no driver or no GPU.
func runReal(t *testing.T, o Options) []Result {
	t.Helper()
	rs, err := Run(context.Background(), o)
	switch {
	case errors.Is(err, ErrNoCgo), errors.Is(err, ErrNoDriver), errors.Is(err, ErrNoGPU):
		t.Skipf("no GPU to check: %v", err)
	case err != nil:
		t.Fatalf("Run() = %v", err)
	}
	return rs
}

// The check on every GPU of the machine, where there are any: each must
// compute correctly.
func TestRealDriver(t *testing.T) {
	for _, r := range runReal(t, Options{}) {
		t.Logf("GPU %d: %s %s %d MiB: %.0f GB/s, %.1f TFLOPS FP32, correct %v %s",
			r.Index, r.Name, r.UUID, r.MemoryBytes>>20, r.BandwidthGBps, r.FP32TFLOPS, r.Correct, r.Problem)
		if !r.Correct {
			t.Errorf("GPU %d (%s) failed the check: %s", r.Index, r.UUID, r.Problem)
		}
	}
}

// On a real GPU, a wrong value in what is read back is caught and named:
// the comparison really looks at the GPU's output.
func TestRealDriverCatchesCorruption(t *testing.T) {
	o := Options{FMATrips: 16, CopyRepeats: 1, corrupt: func(v []float32) { v[len(v)/2] += 0.25 }}
	for _, r := range runReal(t, o) {
		if r.Correct {
			t.Errorf("GPU %d: Correct with corrupted results (%+v)", r.Index, r)
			continue
		}
		for _, kernel := range []string{"saxpy", "fma_loop"} {
			if !strings.Contains(r.Problem, kernel+" computed wrongly: 1 of ") {
				t.Errorf("GPU %d: Problem %q does not report exactly one wrong %s element", r.Index, r.Problem, kernel)
			}
		}
		t.Logf("GPU %d: corrupted results caught: %s", r.Index, r.Problem)
	}
}

// A Library that is not there is no driver, and the error names it.
func TestRunMissingLibrary(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libcuda.so.550.163.01")
	_, err := Run(context.Background(), Options{Library: lib})
	if errors.Is(err, ErrNoCgo) {
		t.Skipf("this build cannot load a driver: %v", err)
	}
	if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), lib) {
		t.Errorf("Run(Library %s) = %v, want ErrNoDriver naming the file", lib, err)
	}
}
