package gpucheck

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// The kernels are hand-written PTX that the driver compiles for the GPU
// it runs on (JIT), so the rig needs no CUDA compiler. PTX ISA 7.0 for
// sm_52 is accepted by every driver since CUDA 11.0 and runs on every
// GPU from Maxwell on.
//
// saxpy computes y[i] = a*x[i] + y[i] for i < n, one thread per element.
//
// fma_loop gives each thread eight independent chains (so the FMA units
// are not waiting on one chain's latency). Chain j of thread i starts at
// (i & 4095) + j; each loop trip applies, fmaUnroll times,
//
//	x = fma(a, b, x)
//	x = fma(c, d, x)
//
// to every chain, and the thread stores the sum of its eight chains.
// With a*b + c*d = fmaStep every pair adds fmaStep, exactly while the
// values stay integers below 2^24 (fmaWant). A skipped or wrong FMA
// anywhere changes the sum.
const ptxTemplate = `//
// RigOS GPU check kernels (pkg/gpu/gpucheck). Hand-written PTX.
//
.version 7.0
.target sm_52
.address_size 64

.visible .entry saxpy(
	.param .u64 saxpy_param_x,
	.param .u64 saxpy_param_y,
	.param .f32 saxpy_param_a,
	.param .u32 saxpy_param_n
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<6>;
	.reg .f32 	%f<5>;
	.reg .b64 	%rd<8>;

	ld.param.u64 	%rd1, [saxpy_param_x];
	ld.param.u64 	%rd2, [saxpy_param_y];
	ld.param.f32 	%f1, [saxpy_param_a];
	ld.param.u32 	%r1, [saxpy_param_n];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	setp.ge.u32 	%p1, %r5, %r1;
	@%p1 bra 	SAXPY_DONE;
	cvta.to.global.u64 	%rd3, %rd1;
	cvta.to.global.u64 	%rd4, %rd2;
	mul.wide.u32 	%rd5, %r5, 4;
	add.s64 	%rd6, %rd3, %rd5;
	add.s64 	%rd7, %rd4, %rd5;
	ld.global.f32 	%f2, [%rd6];
	ld.global.f32 	%f3, [%rd7];
	fma.rn.f32 	%f4, %f1, %f2, %f3;
	st.global.f32 	[%rd7], %f4;
SAXPY_DONE:
	ret;
}

.visible .entry fma_loop(
	.param .u64 fma_loop_param_out,
	.param .f32 fma_loop_param_a,
	.param .f32 fma_loop_param_b,
	.param .f32 fma_loop_param_c,
	.param .f32 fma_loop_param_d,
	.param .u32 fma_loop_param_trips
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<20>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [fma_loop_param_out];
	ld.param.f32 	%f8, [fma_loop_param_a];
	ld.param.f32 	%f9, [fma_loop_param_b];
	ld.param.f32 	%f10, [fma_loop_param_c];
	ld.param.f32 	%f11, [fma_loop_param_d];
	ld.param.u32 	%r1, [fma_loop_param_trips];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	and.b32 	%r6, %r5, 4095;
	cvt.rn.f32.u32 	%f0, %r6;
	add.rn.f32 	%f1, %f0, 0f3F800000;
	add.rn.f32 	%f2, %f0, 0f40000000;
	add.rn.f32 	%f3, %f0, 0f40400000;
	add.rn.f32 	%f4, %f0, 0f40800000;
	add.rn.f32 	%f5, %f0, 0f40A00000;
	add.rn.f32 	%f6, %f0, 0f40C00000;
	add.rn.f32 	%f7, %f0, 0f40E00000;
	mov.u32 	%r7, 0;
	setp.eq.u32 	%p1, %r1, 0;
	@%p1 bra 	FMA_STORE;
FMA_LOOP:
{{body}}	add.u32 	%r7, %r7, 1;
	setp.lt.u32 	%p1, %r7, %r1;
	@%p1 bra 	FMA_LOOP;
FMA_STORE:
	add.rn.f32 	%f12, %f0, %f1;
	add.rn.f32 	%f13, %f2, %f3;
	add.rn.f32 	%f14, %f4, %f5;
	add.rn.f32 	%f15, %f6, %f7;
	add.rn.f32 	%f16, %f12, %f13;
	add.rn.f32 	%f17, %f14, %f15;
	add.rn.f32 	%f18, %f16, %f17;
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.u32 	%rd3, %r5, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.f32 	[%rd4], %f18;
	ret;
}
`

const (
	// fmaChains is the number of independent chains per thread.
	fmaChains = 8
	// fmaUnroll is how many FMA pairs per chain one loop trip runs:
	// enough that the loop's own instructions (7 per trip on sm_90) take
	// few of the issue slots the FMAs need.
	fmaUnroll = 16
	// fmaBlock is the fma_loop kernel's threads per block, and saxpy's.
	fmaBlock = 256
	// fmaBlocksPerSM is how many blocks per streaming multiprocessor
	// the fma_loop kernel is launched with: several full waves however
	// many blocks fit on an SM at once, so no partial wave skews the
	// timing.
	fmaBlocksPerSM = 32
	// fmaStartMask bounds a chain's starting value: (i & 4095) + j.
	fmaStartMask = 4095
)

// The fma_loop constants: odd numbers of 11 significant bits, so the
// multiplier does real work, with a*b + c*d = fmaStep. Every product and
// sum is an integer below 2^24, so float32 holds it exactly.
const (
	fmaA    = 1501
	fmaB    = 1633
	fmaC    = -1531
	fmaD    = 1601
	fmaStep = fmaA*fmaB + fmaC*fmaD // 2
)

// MaxFMATrips is the most loop trips fma_loop may run with exact
// results: each chain stays below 2^24 / fmaChains, so the sum of the
// eight chains is exact too.
const MaxFMATrips = 1 << 15

// ptx is the module the driver loads: the template with the loop body
// unrolled fmaUnroll times.
var ptx = strings.Replace(ptxTemplate, "{{body}}", strings.Repeat(fmaBody(), fmaUnroll), 1)

// fmaBody is one FMA pair on each chain (%f0..%f7), with a, b, c, d in
// %f8..%f11.
func fmaBody() string {
	var b strings.Builder
	for j := range fmaChains {
		fmt.Fprintf(&b, "\tfma.rn.f32 \t%%f%d, %%f8, %%f9, %%f%d;\n", j, j)
	}
	for j := range fmaChains {
		fmt.Fprintf(&b, "\tfma.rn.f32 \t%%f%d, %%f10, %%f11, %%f%d;\n", j, j)
	}
	return b.String()
}

// kernel is an entry point of the PTX module as the host launches it:
// its name and the PTX types of its parameters, in order.
type kernel struct {
	name   string
	params []string
}

var (
	saxpyKernel = kernel{"saxpy", []string{"u64", "u64", "f32", "u32"}}
	fmaKernel   = kernel{"fma_loop", []string{"u64", "f32", "f32", "f32", "f32", "u32"}}
)

// deviceptr is a GPU memory address (CUdeviceptr).
type deviceptr uint64

// packArgs lays out a launch's arguments for cuLaunchKernel: one buffer
// holding every value at its natural alignment, and each value's offset
// in it. An argument whose count or Go type does not match the kernel's
// PTX parameters is an error, not a launch with garbage.
func packArgs(k kernel, args ...any) (buf []byte, offsets []uintptr, err error) {
	if len(args) != len(k.params) {
		return nil, nil, fmt.Errorf("kernel %s takes %d parameters, got %d", k.name, len(k.params), len(args))
	}
	for i, a := range args {
		var size int
		switch k.params[i] {
		case "u64":
			size = 8
		case "f32", "u32":
			size = 4
		default:
			return nil, nil, fmt.Errorf("kernel %s parameter %d: unsupported PTX type %s", k.name, i, k.params[i])
		}
		for len(buf)%size != 0 {
			buf = append(buf, 0)
		}
		offsets = append(offsets, uintptr(len(buf)))
		switch v := a.(type) {
		case deviceptr:
			if k.params[i] != "u64" {
				return nil, nil, fmt.Errorf("kernel %s parameter %d is .%s, got a device pointer", k.name, i, k.params[i])
			}
			buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
		case float32:
			if k.params[i] != "f32" {
				return nil, nil, fmt.Errorf("kernel %s parameter %d is .%s, got a float32", k.name, i, k.params[i])
			}
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		case uint32:
			if k.params[i] != "u32" {
				return nil, nil, fmt.Errorf("kernel %s parameter %d is .%s, got a uint32", k.name, i, k.params[i])
			}
			buf = binary.LittleEndian.AppendUint32(buf, v)
		default:
			return nil, nil, fmt.Errorf("kernel %s parameter %d: unsupported Go type %T", k.name, i, a)
		}
	}
	return buf, offsets, nil
}
