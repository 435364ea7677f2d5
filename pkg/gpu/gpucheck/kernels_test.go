package gpucheck

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ptxEntries reads the PTX module's kernels: each .entry's name and its
// parameters' types.
func ptxEntries(t *testing.T, src string) map[string][]string {
	t.Helper()
	entry := regexp.MustCompile(`(?s)\.visible\s+\.entry\s+(\w+)\s*\((.*?)\)`)
	param := regexp.MustCompile(`\.param\s+\.(\w+)\s+(\w+)`)
	out := map[string][]string{}
	for _, m := range entry.FindAllStringSubmatch(src, -1) {
		var types []string
		for _, p := range param.FindAllStringSubmatch(m[2], -1) {
			types = append(types, p[1])
		}
		out[m[1]] = types
	}
	return out
}

// The kernels the host launches, with the parameters it packs, are the
// ones the PTX declares, and only those.
func TestPTXMatchesLaunches(t *testing.T) {
	want := map[string][]string{}
	for _, k := range []kernel{saxpyKernel, fmaKernel} {
		want[k.name] = k.params
	}
	if diff := cmp.Diff(want, ptxEntries(t, ptx)); diff != "" {
		t.Errorf("PTX entries differ from what the host launches (-host +ptx):\n%s", diff)
	}
	for _, want := range []string{".version 7.0\n", ".target sm_52\n", ".address_size 64\n"} {
		if !strings.Contains(ptx, want) {
			t.Errorf("PTX lacks %q", want)
		}
	}
	if strings.Contains(ptx, "{{") {
		t.Error("PTX template not filled in")
	}
	// The loop body is fmaUnroll pairs on each of fmaChains chains,
	// with the constants in %f8..%f11 as the host passes them.
	loop := ptx[strings.Index(ptx, "FMA_LOOP:"):strings.Index(ptx, "FMA_STORE:")]
	if n, want := strings.Count(loop, "fma.rn.f32"), fmaUnroll*fmaChains*2; n != want {
		t.Errorf("fma_loop's loop has %d FMAs, want %d (fmaFlops counts that many)", n, want)
	}
	for j := range fmaChains {
		ab := regexp.MustCompile(`fma\.rn\.f32\s+%f` + strconv.Itoa(j) + `, %f8, %f9, %f` + strconv.Itoa(j) + `;`)
		cd := regexp.MustCompile(`fma\.rn\.f32\s+%f` + strconv.Itoa(j) + `, %f10, %f11, %f` + strconv.Itoa(j) + `;`)
		if len(ab.FindAllString(loop, -1)) != fmaUnroll || len(cd.FindAllString(loop, -1)) != fmaUnroll {
			t.Errorf("chain %d does not run %d (a, b) and (c, d) FMAs per trip", j, fmaUnroll)
		}
	}
	// The chains start at (i & fmaStartMask) + j.
	if !strings.Contains(ptx, "and.b32 \t%r6, %r5, "+strconv.Itoa(fmaStartMask)+";") {
		t.Errorf("fma_loop does not mask the thread index with %d", fmaStartMask)
	}
	for j := 1; j < fmaChains; j++ {
		lit := fmt.Sprintf("0f%08X", math.Float32bits(float32(j)))
		if !strings.Contains(ptx, "add.rn.f32 \t%f"+strconv.Itoa(j)+", %f0, "+lit+";") {
			t.Errorf("chain %d does not start at %%f0 + %d (%s)", j, j, lit)
		}
	}
}

// ptxas, where it is installed (a CUDA toolkit, or PTXAS naming it),
// assembles the module for the oldest target it declares and for
// Hopper: the nearest check to the driver's JIT without a GPU.
func TestPTXAssembles(t *testing.T) {
	bin := os.Getenv("PTXAS")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("ptxas"); err != nil {
			t.Skip("ptxas not found (set PTXAS or install a CUDA toolkit): the PTX is checked by the driver's JIT only on a GPU")
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "gpucheck.ptx")
	if err := os.WriteFile(src, []byte(ptx), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"sm_52", "sm_90"} {
		out, err := exec.Command(bin, "-arch", arch, "-v", "-o", filepath.Join(dir, arch+".cubin"), src).CombinedOutput()
		if err != nil {
			t.Errorf("ptxas -arch %s: %v\n%s", arch, err, out)
			continue
		}
		t.Logf("ptxas -arch %s:\n%s", arch, out)
	}
}

func TestPackArgs(t *testing.T) {
	buf, offs, err := packArgs(fmaKernel, deviceptr(0x7f0000001000), float32(1.5), float32(2), float32(-3), float32(4), uint32(65536))
	if err != nil {
		t.Fatalf("packArgs() = %v", err)
	}
	if want := []uintptr{0, 8, 12, 16, 20, 24}; !cmp.Equal(offs, want) {
		t.Errorf("offsets = %v, want %v", offs, want)
	}
	if got := binary.LittleEndian.Uint64(buf[0:]); got != 0x7f0000001000 {
		t.Errorf("pointer = %#x", got)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(buf[16:])); got != -3 {
		t.Errorf("c = %v, want -3", got)
	}
	if got := binary.LittleEndian.Uint32(buf[24:]); got != 65536 {
		t.Errorf("trips = %d, want 65536", got)
	}
	// A u64 after a 4-byte value is aligned to 8.
	_, offs, err = packArgs(kernel{"k", []string{"u32", "u64"}}, uint32(1), deviceptr(2))
	if err != nil || !cmp.Equal(offs, []uintptr{0, 8}) {
		t.Errorf("packArgs(u32, u64) offsets = %v, %v; want [0 8]", offs, err)
	}
	for _, tc := range []struct {
		name string
		args []any
	}{
		{"too few", []any{deviceptr(1), deviceptr(2), float32(3)}},
		{"too many", []any{deviceptr(1), deviceptr(2), float32(3), uint32(4), uint32(5)}},
		{"float64 for f32", []any{deviceptr(1), deviceptr(2), 3.0, uint32(4)}},
		{"int for u32", []any{deviceptr(1), deviceptr(2), float32(3), 4}},
		{"u32 for u64", []any{uint32(1), deviceptr(2), float32(3), uint32(4)}},
		{"pointer for f32", []any{deviceptr(1), deviceptr(2), deviceptr(3), uint32(4)}},
	} {
		if _, _, err := packArgs(saxpyKernel, tc.args...); err == nil {
			t.Errorf("packArgs(saxpy, %s) = nil error", tc.name)
		}
	}
}
