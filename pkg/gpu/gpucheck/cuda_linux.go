//go:build cgo && linux

package gpucheck

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// The few CUDA driver API types the check uses, declared here: no CUDA
// headers are needed to build.
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUevent_st *CUevent;
typedef struct CUstream_st *CUstream;
typedef struct { unsigned char bytes[16]; } CUuuid;

// Each driver function: a pointer filled by dlsym and a wrapper Go can
// call.
#define CU_FN(name, params, args) \
	static CUresult (*p_##name) params; \
	static CUresult gc_##name params { return p_##name args; }

CU_FN(cuInit, (unsigned int flags), (flags))
CU_FN(cuDeviceGetCount, (int *n), (n))
CU_FN(cuDeviceGet, (CUdevice *d, int ordinal), (d, ordinal))
CU_FN(cuDeviceGetName, (char *name, int len, CUdevice d), (name, len, d))
CU_FN(cuDeviceGetUuid, (CUuuid *u, CUdevice d), (u, d))
CU_FN(cuDeviceGetUuid_v2, (CUuuid *u, CUdevice d), (u, d))
CU_FN(cuDeviceTotalMem_v2, (size_t *bytes, CUdevice d), (bytes, d))
CU_FN(cuDeviceGetAttribute, (int *v, int attr, CUdevice d), (v, attr, d))
CU_FN(cuCtxCreate_v2, (CUcontext *c, unsigned int flags, CUdevice d), (c, flags, d))
CU_FN(cuCtxSetCurrent, (CUcontext c), (c))
CU_FN(cuCtxSynchronize, (void), ())
CU_FN(cuCtxDestroy_v2, (CUcontext c), (c))
CU_FN(cuMemGetInfo_v2, (size_t *free, size_t *total), (free, total))
CU_FN(cuModuleLoadData, (CUmodule *m, const void *image), (m, image))
CU_FN(cuModuleLoadDataEx, (CUmodule *m, const void *image, unsigned int n, int *opts, void **vals), (m, image, n, opts, vals))
CU_FN(cuModuleGetFunction, (CUfunction *f, CUmodule m, const char *name), (f, m, name))
CU_FN(cuMemAlloc_v2, (CUdeviceptr *p, size_t bytes), (p, bytes))
CU_FN(cuMemFree_v2, (CUdeviceptr p), (p))
CU_FN(cuMemcpyHtoD_v2, (CUdeviceptr dst, const void *src, size_t bytes), (dst, src, bytes))
CU_FN(cuMemcpyDtoH_v2, (void *dst, CUdeviceptr src, size_t bytes), (dst, src, bytes))
CU_FN(cuMemcpyDtoD_v2, (CUdeviceptr dst, CUdeviceptr src, size_t bytes), (dst, src, bytes))
CU_FN(cuEventCreate, (CUevent *e, unsigned int flags), (e, flags))
CU_FN(cuEventRecord, (CUevent e, CUstream s), (e, s))
CU_FN(cuEventSynchronize, (CUevent e), (e))
CU_FN(cuEventElapsedTime, (float *ms, CUevent start, CUevent end), (ms, start, end))
CU_FN(cuEventDestroy_v2, (CUevent e), (e))
CU_FN(cuGetErrorString, (CUresult r, const char **s), (r, s))
CU_FN(cuGetErrorName, (CUresult r, const char **s), (r, s))
CU_FN(cuLaunchKernel, (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, CUstream s, void **params, void **extra), (f, gx, gy, gz, bx, by, bz, shared, s, params, extra))

#define SYM(name, required) { #name, (void **)&p_##name, required }
static struct { const char *name; void **fn; int required; } gc_syms[] = {
	SYM(cuInit, 1), SYM(cuDeviceGetCount, 1), SYM(cuDeviceGet, 1),
	SYM(cuDeviceGetName, 1), SYM(cuDeviceGetUuid, 0), SYM(cuDeviceGetUuid_v2, 0),
	SYM(cuDeviceTotalMem_v2, 1), SYM(cuDeviceGetAttribute, 1), SYM(cuCtxCreate_v2, 1),
	SYM(cuCtxSetCurrent, 1), SYM(cuCtxSynchronize, 1), SYM(cuCtxDestroy_v2, 1),
	SYM(cuMemGetInfo_v2, 1), SYM(cuModuleLoadData, 1), SYM(cuModuleLoadDataEx, 0),
	SYM(cuModuleGetFunction, 1), SYM(cuMemAlloc_v2, 1), SYM(cuMemFree_v2, 1),
	SYM(cuMemcpyHtoD_v2, 1), SYM(cuMemcpyDtoH_v2, 1), SYM(cuMemcpyDtoD_v2, 1),
	SYM(cuEventCreate, 1), SYM(cuEventRecord, 1), SYM(cuEventSynchronize, 1),
	SYM(cuEventElapsedTime, 1), SYM(cuEventDestroy_v2, 1), SYM(cuGetErrorString, 1),
	SYM(cuGetErrorName, 1), SYM(cuLaunchKernel, 1),
};

// gc_load opens the driver at path and resolves every function. It
// returns 0, or 1 when the library cannot be opened and 2 when a
// required function is missing, with the reason in err.
static int gc_load(const char *path, char *err, size_t n) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(err, n, "%s", e ? e : "dlopen failed");
		return 1;
	}
	for (size_t i = 0; i < sizeof gc_syms / sizeof gc_syms[0]; i++) {
		*gc_syms[i].fn = dlsym(lib, gc_syms[i].name);
		if (!*gc_syms[i].fn && gc_syms[i].required) {
			snprintf(err, n, "%s has no %s", path, gc_syms[i].name);
			return 2;
		}
	}
	if (!p_cuDeviceGetUuid && !p_cuDeviceGetUuid_v2) {
		snprintf(err, n, "%s has neither cuDeviceGetUuid_v2 nor cuDeviceGetUuid", path);
		return 2;
	}
	return 0;
}

static int gc_has_uuid_v2(void) { return p_cuDeviceGetUuid_v2 != NULL; }
static int gc_has_load_ex(void) { return p_cuModuleLoadDataEx != NULL; }

// gc_load_module_log loads a module and keeps the JIT compiler's error
// log (CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6).
static CUresult gc_load_module_log(CUmodule *m, const void *image, char *log, size_t n) {
	int opts[2] = {5, 6};
	void *vals[2] = {log, (void *)(uintptr_t)n};
	return p_cuModuleLoadDataEx(m, image, 2, opts, vals);
}

// gc_launch launches f on a one-dimensional grid with its parameters
// packed in args at offs (packArgs), on the default stream.
static CUresult gc_launch(CUfunction f, unsigned int grid, unsigned int block, void *args, const size_t *offs, int nargs) {
	void *params[16];
	if (nargs > 16) {
		return 1; // CUDA_ERROR_INVALID_VALUE
	}
	for (int i = 0; i < nargs; i++) {
		params[i] = (char *)args + offs[i];
	}
	return p_cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, NULL, params, NULL);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// CUDA driver API constants the check uses.
const (
	cudaErrorNoDevice       = 100 // CUDA_ERROR_NO_DEVICE
	attrMultiprocessorCount = 16  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
)

// The libcuda this process loaded: the driver functions are process
// globals, so a process loads one.
var (
	loadMu  sync.Mutex
	loaded  string // Options.Library once loaded; "" before
	initErr error  // cuInit's, once loaded
)

// cudaError is a failed driver call.
type cudaError struct {
	call string
	code C.CUresult
}

func (e *cudaError) Error() string {
	var name, desc *C.char
	C.gc_cuGetErrorName(e.code, &name)
	C.gc_cuGetErrorString(e.code, &desc)
	if name == nil || desc == nil {
		return fmt.Sprintf("%s: CUDA error %d", e.call, int(e.code))
	}
	return fmt.Sprintf("%s: %s (%s)", e.call, C.GoString(desc), C.GoString(name))
}

func check(call string, rc C.CUresult) error {
	if rc != 0 {
		return &cudaError{call, rc}
	}
	return nil
}

// cuda is the real driver, the loaded libcuda.
type cuda struct{}

// openCUDA loads the libcuda at lib and initialises it, once per process
// (the library stays loaded: unloading the driver is not safe). A
// library that cannot be opened is ErrNoDriver and may be retried;
// after one loads, asking for another is an error.
func openCUDA(lib string) (driver, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != "" {
		if lib != loaded {
			return nil, fmt.Errorf("loading the NVIDIA driver %s: this process already loaded %s", lib, loaded)
		}
		if initErr != nil {
			return nil, initErr
		}
		return cuda{}, nil
	}
	path := C.CString(lib)
	defer C.free(unsafe.Pointer(path))
	buf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(buf))
	switch C.gc_load(path, buf, 512) {
	case 0:
	case 1:
		return nil, fmt.Errorf("%w: %s", ErrNoDriver, C.GoString(buf))
	default:
		return nil, fmt.Errorf("loading the NVIDIA driver: %s", C.GoString(buf))
	}
	loaded = lib
	if rc := C.gc_cuInit(0); rc != 0 {
		initErr = check("cuInit", rc)
		if rc == cudaErrorNoDevice {
			initErr = fmt.Errorf("%w: %w", ErrNoGPU, initErr)
		}
		return nil, initErr
	}
	return cuda{}, nil
}

func (cuda) count() (int, error) {
	var n C.int
	if err := check("cuDeviceGetCount", C.gc_cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

func (cuda) info(index int) (deviceInfo, error) {
	var d C.CUdevice
	if err := check("cuDeviceGet", C.gc_cuDeviceGet(&d, C.int(index))); err != nil {
		return deviceInfo{}, err
	}
	var info deviceInfo
	name := (*C.char)(C.malloc(256))
	defer C.free(unsafe.Pointer(name))
	if err := check("cuDeviceGetName", C.gc_cuDeviceGetName(name, 256, d)); err != nil {
		return info, err
	}
	info.name = C.GoString(name)
	var u C.CUuuid
	var err error
	if C.gc_has_uuid_v2() != 0 {
		err = check("cuDeviceGetUuid_v2", C.gc_cuDeviceGetUuid_v2(&u, d))
	} else {
		err = check("cuDeviceGetUuid", C.gc_cuDeviceGetUuid(&u, d))
	}
	if err != nil {
		return info, err
	}
	var raw [16]byte
	for i := range raw {
		raw[i] = byte(u.bytes[i])
	}
	info.uuid = formatUUID(raw)
	var mem C.size_t
	if err := check("cuDeviceTotalMem_v2", C.gc_cuDeviceTotalMem_v2(&mem, d)); err != nil {
		return info, err
	}
	info.memory = uint64(mem)
	var sms C.int
	if err := check("cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)", C.gc_cuDeviceGetAttribute(&sms, attrMultiprocessorCount, d)); err != nil {
		return info, err
	}
	info.sms = int(sms)
	return info, nil
}

// cudaDevice is a context on one GPU with the check's module loaded.
type cudaDevice struct {
	ctx        C.CUcontext
	saxpyFn    C.CUfunction
	fmaLoopFn  C.CUfunction
	allocation []C.CUdeviceptr
}

func (cuda) open(index int) (device, error) {
	var d C.CUdevice
	if err := check("cuDeviceGet", C.gc_cuDeviceGet(&d, C.int(index))); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev := &cudaDevice{}
	if err := check("cuCtxCreate_v2", C.gc_cuCtxCreate_v2(&dev.ctx, 0, d)); err != nil {
		return nil, err
	}
	if err := dev.load(); err != nil {
		C.gc_cuCtxDestroy_v2(dev.ctx)
		return nil, err
	}
	return dev, nil
}

// load JIT-compiles the PTX module and finds its kernels. The context
// is current on the calling thread.
func (d *cudaDevice) load() error {
	image := C.CString(ptx)
	defer C.free(unsafe.Pointer(image))
	var mod C.CUmodule
	if rc := C.gc_cuModuleLoadData(&mod, unsafe.Pointer(image)); rc != 0 {
		err := check("cuModuleLoadData (JIT-compiling the PTX)", rc)
		if C.gc_has_load_ex() != 0 { // again, for the compiler's log
			log := (*C.char)(C.calloc(1, 4096))
			defer C.free(unsafe.Pointer(log))
			C.gc_load_module_log(&mod, unsafe.Pointer(image), log, 4096)
			if s := C.GoString(log); s != "" {
				err = fmt.Errorf("%w: %s", err, s)
			}
		}
		return err
	}
	for _, k := range []struct {
		fn   *C.CUfunction
		name string
	}{{&d.saxpyFn, saxpyKernel.name}, {&d.fmaLoopFn, fmaKernel.name}} {
		name := C.CString(k.name)
		err := check("cuModuleGetFunction("+k.name+")", C.gc_cuModuleGetFunction(k.fn, mod, name))
		C.free(unsafe.Pointer(name))
		if err != nil {
			return err
		}
	}
	return nil
}

// with runs f with the device's context current on the calling thread.
func (d *cudaDevice) with(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := check("cuCtxSetCurrent", C.gc_cuCtxSetCurrent(d.ctx)); err != nil {
		return err
	}
	return f()
}

func (d *cudaDevice) freeMemory() (uint64, error) {
	var free, total C.size_t
	err := d.with(func() error {
		return check("cuMemGetInfo_v2", C.gc_cuMemGetInfo_v2(&free, &total))
	})
	return uint64(free), err
}

// alloc allocates bytes of device memory, freed by freeAll.
func (d *cudaDevice) alloc(bytes uint64) (deviceptr, error) {
	var p C.CUdeviceptr
	if err := check(fmt.Sprintf("cuMemAlloc_v2(%d MiB)", bytes>>20), C.gc_cuMemAlloc_v2(&p, C.size_t(bytes))); err != nil {
		return 0, err
	}
	d.allocation = append(d.allocation, p)
	return deviceptr(p), nil
}

func (d *cudaDevice) freeAll() {
	for _, p := range d.allocation {
		C.gc_cuMemFree_v2(p)
	}
	d.allocation = nil
}

func (d *cudaDevice) launch(f C.CUfunction, k kernel, grid, block int, args ...any) error {
	buf, offs, err := packArgs(k, args...)
	if err != nil {
		return err
	}
	// gc_launch builds the array of pointers into buf that
	// cuLaunchKernel takes; the driver copies the values at launch.
	coffs := make([]C.size_t, len(offs))
	for i, o := range offs {
		coffs[i] = C.size_t(o)
	}
	return check("cuLaunchKernel("+k.name+")", C.gc_launch(f, C.uint(grid), C.uint(block), unsafe.Pointer(&buf[0]), &coffs[0], C.int(len(offs))))
}

// timed runs f between two events on the default stream and returns the
// time between them.
func timed(f func() error) (time.Duration, error) {
	var start, stop C.CUevent
	if err := check("cuEventCreate", C.gc_cuEventCreate(&start, 0)); err != nil {
		return 0, err
	}
	defer C.gc_cuEventDestroy_v2(start)
	if err := check("cuEventCreate", C.gc_cuEventCreate(&stop, 0)); err != nil {
		return 0, err
	}
	defer C.gc_cuEventDestroy_v2(stop)
	if err := check("cuEventRecord", C.gc_cuEventRecord(start, nil)); err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	if err := check("cuEventRecord", C.gc_cuEventRecord(stop, nil)); err != nil {
		return 0, err
	}
	if err := check("cuEventSynchronize", C.gc_cuEventSynchronize(stop)); err != nil {
		return 0, err
	}
	var ms C.float
	if err := check("cuEventElapsedTime", C.gc_cuEventElapsedTime(&ms, start, stop)); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}

func (d *cudaDevice) saxpy(a float32, x, y []float32) ([]float32, error) {
	n := len(x)
	out := make([]float32, n)
	if n == 0 {
		return out, nil
	}
	bytes := uint64(n) * 4
	err := d.with(func() error {
		defer d.freeAll()
		dx, err := d.alloc(bytes)
		if err != nil {
			return err
		}
		dy, err := d.alloc(bytes)
		if err != nil {
			return err
		}
		if err := check("cuMemcpyHtoD_v2", C.gc_cuMemcpyHtoD_v2(C.CUdeviceptr(dx), unsafe.Pointer(&x[0]), C.size_t(bytes))); err != nil {
			return err
		}
		if err := check("cuMemcpyHtoD_v2", C.gc_cuMemcpyHtoD_v2(C.CUdeviceptr(dy), unsafe.Pointer(&y[0]), C.size_t(bytes))); err != nil {
			return err
		}
		grid := (n + fmaBlock - 1) / fmaBlock
		if err := d.launch(d.saxpyFn, saxpyKernel, grid, fmaBlock, dx, dy, a, uint32(n)); err != nil {
			return err
		}
		if err := check("cuCtxSynchronize (saxpy)", C.gc_cuCtxSynchronize()); err != nil {
			return err
		}
		return check("cuMemcpyDtoH_v2", C.gc_cuMemcpyDtoH_v2(unsafe.Pointer(&out[0]), C.CUdeviceptr(dy), C.size_t(bytes)))
	})
	return out, err
}

func (d *cudaDevice) fmaLoop(threads, trips int) ([]float32, time.Duration, error) {
	out := make([]float32, threads)
	var took time.Duration
	if threads == 0 {
		return out, 0, nil
	}
	bytes := uint64(threads) * 4
	err := d.with(func() error {
		defer d.freeAll()
		dout, err := d.alloc(bytes)
		if err != nil {
			return err
		}
		took, err = timed(func() error {
			return d.launch(d.fmaLoopFn, fmaKernel, threads/fmaBlock, fmaBlock,
				dout, float32(fmaA), float32(fmaB), float32(fmaC), float32(fmaD), uint32(trips))
		})
		if err != nil {
			return err
		}
		if err := check("cuCtxSynchronize (fma_loop)", C.gc_cuCtxSynchronize()); err != nil {
			return err
		}
		return check("cuMemcpyDtoH_v2", C.gc_cuMemcpyDtoH_v2(unsafe.Pointer(&out[0]), C.CUdeviceptr(dout), C.size_t(bytes)))
	})
	return out, took, err
}

func (d *cudaDevice) copy(bytes uint64, reps int) (time.Duration, error) {
	var took time.Duration
	err := d.with(func() error {
		defer d.freeAll()
		src, err := d.alloc(bytes)
		if err != nil {
			return err
		}
		dst, err := d.alloc(bytes)
		if err != nil {
			return err
		}
		copyOnce := func() error {
			return check("cuMemcpyDtoD_v2", C.gc_cuMemcpyDtoD_v2(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(bytes)))
		}
		if err := copyOnce(); err != nil { // warm-up, untimed
			return err
		}
		took, err = timed(func() error {
			for range reps {
				if err := copyOnce(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return check("cuCtxSynchronize (copies)", C.gc_cuCtxSynchronize())
	})
	return took, err
}

func (d *cudaDevice) close() error {
	return check("cuCtxDestroy_v2", C.gc_cuCtxDestroy_v2(d.ctx))
}
