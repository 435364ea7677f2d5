// Package gpucheck checks that each NVIDIA GPU computes correctly and
// measures its memory bandwidth and FP32 throughput, with nothing on the
// machine but the driver: it loads libcuda.so.1 at run time (dlopen,
// CUDA driver API) and gives it hand-written PTX, which the driver
// compiles for the GPU. No CUDA toolkit, compiler or runtime library is
// needed.
//
// For each GPU it runs a saxpy kernel over a few million elements and an
// FMA loop kernel, reads the results back and compares every element
// with values computed on the host (Compare); the inputs are chosen so
// float32 holds every value exactly and the comparison has no tolerance.
// A wrong answer makes the GPU's Result incorrect, however fast it was.
//
// What it does not check: FP64, tensor cores, NVLink and PCIe transfers,
// or errors that take longer than a few seconds of load to appear. The
// throughput figures are one short measurement each, not a benchmark.
//
// It needs cgo on Linux; built without, Run reports ErrNoCgo.
package gpucheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrNoDriver is returned when libcuda (Options.Library) cannot be
	// loaded; the error wrapping it names the file.
	ErrNoDriver = errors.New("no NVIDIA driver: libcuda not found (is the NVIDIA driver installed and the GPU visible in this container?)")
	// ErrNoGPU is returned when the driver loads but finds no GPU.
	ErrNoGPU = errors.New("no NVIDIA GPU found by the driver (are the /dev/nvidia* devices present in this container, and is the nvidia kernel module loaded?)")
	// ErrNoCgo is returned by a build without cgo or for another system
	// than Linux: such a build cannot load the driver.
	ErrNoCgo = errors.New("this build cannot load the NVIDIA driver: gpucheck needs cgo on Linux (build with CGO_ENABLED=1)")
)

// Result is one GPU's check.
type Result struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes"`
	// Correct is true when every computed element was right and every
	// step ran.
	Correct bool `json:"correct"`
	// Problem says what was wrong when Correct is false.
	Problem string `json:"problem,omitempty"`
	// BandwidthGBps is device memory bandwidth in GB/s (10^9 bytes/s),
	// counting each copied byte twice, read and written, as CUDA's
	// bandwidthTest does for device-to-device copies. It is comparable
	// to the datasheet's memory bandwidth.
	BandwidthGBps float64 `json:"bandwidth_gbps"`
	// FP32TFLOPS is FP32 throughput in 10^12 operations per second,
	// counting an FMA as two.
	FP32TFLOPS float64 `json:"fp32_tflops"`
}

// Options tune the check. The zero value checks with the defaults.
type Options struct {
	// SAXPYElements is the length of the saxpy vectors. Default is
	// 4194304 (16 MiB per vector).
	SAXPYElements int
	// FMATrips is how many loop trips each fma_loop thread runs (each
	// trip is 256 FMAs per thread). At most MaxFMATrips. Default is
	// 16384, about 0.14 s on an H100.
	FMATrips int
	// CopyBytes is the size of the buffer copied to measure bandwidth.
	// Default is 1 GiB; it is lowered to a quarter of the GPU's free
	// memory when that is less.
	CopyBytes uint64
	// CopyRepeats is how many timed copies the bandwidth is measured
	// over. Default is 20.
	CopyRepeats int
	// Library is the libcuda file to load: a name the dynamic loader
	// looks up, or a path. A process loads one libcuda: once one is
	// loaded, Run with another Library fails. Default is "libcuda.so.1".
	Library string

	// driver is the CUDA driver; nil means libcuda (Library).
	driver driver
	// corrupt, when set, is applied to every result read back from a
	// GPU before it is compared: the hook that shows a wrong answer is
	// caught, end to end.
	corrupt func([]float32)
}

const (
	defaultSAXPYElements = 1 << 22
	defaultFMATrips      = 1 << 14
	defaultCopyBytes     = 1 << 30
	defaultCopyRepeats   = 20
	defaultLibrary       = "libcuda.so.1"
	// minCopyBytes is the smallest buffer that measures bandwidth
	// rather than launch overhead.
	minCopyBytes = 64 << 20
	maxSAXPY     = 1 << 28
)

func (o Options) withDefaults() Options {
	if o.SAXPYElements == 0 {
		o.SAXPYElements = defaultSAXPYElements
	}
	if o.FMATrips == 0 {
		o.FMATrips = defaultFMATrips
	}
	if o.CopyBytes == 0 {
		o.CopyBytes = defaultCopyBytes
	}
	if o.CopyRepeats == 0 {
		o.CopyRepeats = defaultCopyRepeats
	}
	if o.Library == "" {
		o.Library = defaultLibrary
	}
	return o
}

// Validate reports every option out of range at once. Zero values are
// valid: they mean the defaults.
func (o Options) Validate() error {
	var errs []error
	if o.SAXPYElements < 0 || o.SAXPYElements > maxSAXPY {
		errs = append(errs, fmt.Errorf("SAXPYElements %d: must be between 0 (the default) and %d", o.SAXPYElements, maxSAXPY))
	}
	if o.FMATrips < 0 || o.FMATrips > MaxFMATrips {
		errs = append(errs, fmt.Errorf("FMATrips %d: must be between 0 (the default) and %d (beyond it float32 no longer holds the results exactly)", o.FMATrips, MaxFMATrips))
	}
	if o.CopyBytes != 0 && o.CopyBytes < minCopyBytes {
		errs = append(errs, fmt.Errorf("CopyBytes %d: must be 0 (the default) or at least %d", o.CopyBytes, minCopyBytes))
	}
	if o.CopyRepeats < 0 {
		errs = append(errs, fmt.Errorf("CopyRepeats %d: must not be negative", o.CopyRepeats))
	}
	return errors.Join(errs...)
}

// driver is the CUDA driver as the check uses it: cuda_linux.go
// implements it with libcuda, the tests with a fake that does the
// kernels' arithmetic in Go.
type driver interface {
	// count is the number of GPUs.
	count() (int, error)
	// info identifies GPU index without making a context on it.
	info(index int) (deviceInfo, error)
	// open makes a context on GPU index and loads the PTX module.
	open(index int) (device, error)
}

type deviceInfo struct {
	name   string
	uuid   string
	memory uint64
	// sms is the number of streaming multiprocessors.
	sms int
}

// device is one GPU with the check's module loaded.
type device interface {
	// freeMemory is the GPU's free memory in bytes.
	freeMemory() (uint64, error)
	// saxpy runs the saxpy kernel and returns y[i] = a*x[i] + y[i] as
	// read back from the GPU.
	saxpy(a float32, x, y []float32) ([]float32, error)
	// fmaLoop runs the fma_loop kernel on threads threads (a multiple
	// of fmaBlock) for trips loop trips, and returns what each thread
	// stored and how long the kernel ran.
	fmaLoop(threads, trips int) ([]float32, time.Duration, error)
	// copy copies a bytes-long buffer to another reps times (after one
	// untimed copy) and returns how long the timed copies took.
	copy(bytes uint64, reps int) (time.Duration, error)
	// close frees the context and everything in it.
	close() error
}

// Run checks every GPU in turn. A GPU that computes wrongly, or on
// which a step fails, has Correct false and says why in Problem; Run's
// error is for what stops the whole check: invalid options, no driver
// (ErrNoDriver, ErrNoCgo), no GPU (ErrNoGPU), or ctx ending between
// steps.
func Run(ctx context.Context, opts Options) ([]Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("options: %w", err)
	}
	o := opts.withDefaults()
	drv := o.driver
	if drv == nil {
		var err error
		if drv, err = openCUDA(o.Library); err != nil {
			return nil, err
		}
	}
	n, err := drv.count()
	if err != nil {
		return nil, fmt.Errorf("counting GPUs: %w", err)
	}
	if n == 0 {
		return nil, ErrNoGPU
	}
	var out []Result
	for i := range n {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r, err := checkGPU(ctx, drv, i, o)
		if err != nil {
			return append(out, r), err
		}
		out = append(out, r)
	}
	return out, nil
}

// checkGPU checks one GPU. Its error is ctx's; what goes wrong on the GPU
// is in the Result.
func checkGPU(ctx context.Context, drv driver, index int, o Options) (Result, error) {
	r := Result{Index: index}
	var p problems
	info, err := drv.info(index)
	if err != nil {
		p.add("identifying the GPU", err)
		return p.result(r), nil
	}
	r.Name, r.UUID, r.MemoryBytes = info.name, info.uuid, info.memory
	dev, err := drv.open(index)
	if err != nil {
		p.add("opening the GPU", err)
		return p.result(r), nil
	}
	err = measure(ctx, dev, info, o, &r, &p)
	if cerr := dev.close(); cerr != nil {
		p.add("closing the GPU", cerr)
	}
	return p.result(r), err
}

// problems collects what went wrong on one GPU.
type problems []string

func (p *problems) add(step string, err error) { *p = append(*p, step+": "+err.Error()) }

// result is r with Correct and Problem set from p.
func (p problems) result(r Result) Result {
	r.Correct = len(p) == 0
	r.Problem = strings.Join(p, "; ")
	return r
}

// measure runs the kernels and the copies on dev, filling r's figures
// and p. Its error is ctx's.
func measure(ctx context.Context, dev device, info deviceInfo, o Options, r *Result, p *problems) error {
	// Correctness: saxpy over every element.
	x, y := saxpyInputs(o.SAXPYElements)
	want := saxpyWant(saxpyA, x, y)
	if got, err := dev.saxpy(saxpyA, x, y); err != nil {
		p.add("saxpy", err)
	} else if err := o.compare(got, want); err != nil {
		p.add("saxpy computed wrongly", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// Correctness and FP32 throughput: fma_loop, once to warm the GPU
	// up and once timed, both checked.
	threads := max(info.sms, 1) * fmaBlocksPerSM * fmaBlock
	want = fmaWant(threads, o.FMATrips)
	for pass := range 2 {
		got, took, err := dev.fmaLoop(threads, o.FMATrips)
		if err != nil {
			p.add("fma_loop", err)
			break
		}
		if err := o.compare(got, want); err != nil {
			p.add("fma_loop computed wrongly", err)
			break
		}
		if pass == 1 && took > 0 {
			r.FP32TFLOPS = fmaFlops(threads, o.FMATrips) / took.Seconds() / 1e12
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// Bandwidth: device-to-device copies.
	free, err := dev.freeMemory()
	if err != nil {
		p.add("reading free memory", err)
		return nil
	}
	size, err := copySize(o.CopyBytes, free)
	if err != nil {
		p.add("bandwidth", err)
		return nil
	}
	took, err := dev.copy(size, o.CopyRepeats)
	if err != nil {
		p.add("bandwidth", err)
		return nil
	}
	if took > 0 {
		r.BandwidthGBps = copyBytes(size, o.CopyRepeats) / took.Seconds() / 1e9
	}
	return nil
}

// compare is Compare after the corrupt hook, if any.
func (o Options) compare(got, want []float32) error {
	if o.corrupt != nil {
		o.corrupt(got)
	}
	return Compare(got, want)
}

// fmaFlops is the floating-point operations fma_loop does: an FMA is
// two.
func fmaFlops(threads, trips int) float64 {
	return float64(threads) * float64(trips) * fmaUnroll * fmaChains * 2 * 2
}

// copyBytes is the traffic reps copies of size bytes make: each byte is
// read once and written once.
func copyBytes(size uint64, reps int) float64 {
	return 2 * float64(size) * float64(reps)
}

// copySize is the buffer size for the bandwidth copies: want, or a
// quarter of free memory when that is less (two buffers, and room left
// for others), in whole MiB.
func copySize(want, free uint64) (uint64, error) {
	size := min(want, free/4) &^ (1<<20 - 1)
	if size < minCopyBytes {
		return 0, fmt.Errorf("only %d MiB of GPU memory free, need %d MiB", free>>20, 4*minCopyBytes>>20)
	}
	return size, nil
}

// formatUUID writes a GPU UUID as nvidia-smi and NVML do:
// GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
func formatUUID(u [16]byte) string {
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
