package gpucheck

import (
	"fmt"
	"math"
	"time"
)

// fakeDriver stands in for libcuda: its GPUs do the kernels' arithmetic
// in Go, following the PTX instruction by instruction.
type fakeDriver struct {
	gpus []*fakeGPU
}

var (
	_ driver = (*fakeDriver)(nil)
	_ device = (*fakeGPU)(nil)
)

type fakeGPU struct {
	info deviceInfo
	free uint64
	// openErr fails open.
	openErr error
	// fault, when set, changes what the GPU computes: a faulty GPU.
	fault func([]float32)
	// took is how long every timed step takes.
	took   time.Duration
	opened bool
	closed bool
	copied uint64
}

func (f *fakeDriver) count() (int, error) { return len(f.gpus), nil }

func (f *fakeDriver) info(i int) (deviceInfo, error) { return f.gpus[i].info, nil }

func (f *fakeDriver) open(i int) (device, error) {
	g := f.gpus[i]
	if g.openErr != nil {
		return nil, g.openErr
	}
	g.opened = true
	return g, nil
}

func (g *fakeGPU) freeMemory() (uint64, error) { return g.free, nil }

func (g *fakeGPU) saxpy(a float32, x, y []float32) ([]float32, error) {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = fma32(a, x[i], y[i]) // fma.rn.f32 %f4, %f1, %f2, %f3
	}
	if g.fault != nil {
		g.fault(out)
	}
	return out, nil
}

func (g *fakeGPU) fmaLoop(threads, trips int) ([]float32, time.Duration, error) {
	if threads%fmaBlock != 0 {
		return nil, 0, fmt.Errorf("threads %d not a multiple of the block size %d", threads, fmaBlock)
	}
	out := simulateFMALoop(threads, trips)
	if g.fault != nil {
		g.fault(out)
	}
	return out, g.took, nil
}

func (g *fakeGPU) copy(bytes uint64, reps int) (time.Duration, error) {
	if 2*bytes > g.free {
		return 0, fmt.Errorf("out of memory")
	}
	g.copied = bytes
	return g.took, nil
}

func (g *fakeGPU) close() error {
	g.closed = true
	return nil
}

// fma32 is fma.rn.f32. Through float64 it can round twice, which the
// check's inputs never make it do: all their values are exact.
func fma32(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// simulateFMALoop is fma_loop's PTX, in Go.
func simulateFMALoop(threads, trips int) []float32 {
	out := make([]float32, threads)
	for i := range out {
		var f [fmaChains]float32
		f[0] = float32(uint32(i) & fmaStartMask) // and.b32, cvt.rn.f32.u32
		for j := 1; j < fmaChains; j++ {
			f[j] = f[0] + float32(j) // add.rn.f32 %fj, %f0, j
		}
		for range trips {
			for range fmaUnroll {
				for j := range f {
					f[j] = fma32(fmaA, fmaB, f[j])
				}
				for j := range f {
					f[j] = fma32(fmaC, fmaD, f[j])
				}
			}
		}
		out[i] = ((f[0] + f[1]) + (f[2] + f[3])) + ((f[4] + f[5]) + (f[6] + f[7]))
	}
	return out
}
