package gpucheck

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCompareCorrect(t *testing.T) {
	x, y := saxpyInputs(100000)
	want := saxpyWant(saxpyA, x, y)
	got := append([]float32(nil), want...)
	if err := Compare(got, want); err != nil {
		t.Fatalf("Compare(identical) = %v, want nil", err)
	}
}

// A GPU that gets one element wrong, by the smallest amount float32 can
// show, is reported with that element's index.
func TestCompareInjectedFault(t *testing.T) {
	want := fmaWant(8192, 3)
	for _, tc := range []struct {
		name  string
		index int
		fault func(float32) float32
	}{
		{"last bit flipped", 4321, func(v float32) float32 { return math.Float32frombits(math.Float32bits(v) ^ 1) }},
		{"sign flipped", 0, func(v float32) float32 { return -v }},
		{"NaN", 8191, func(float32) float32 { return float32(math.NaN()) }},
		{"zero", 77, func(float32) float32 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := append([]float32(nil), want...)
			got[tc.index] = tc.fault(got[tc.index])
			err := Compare(got, want)
			var m *MismatchError
			if !errors.As(err, &m) {
				t.Fatalf("Compare(one wrong element) = %v, want a *MismatchError", err)
			}
			if m.Count != 1 || m.Len != len(want) || len(m.First) != 1 || m.First[0].Index != tc.index {
				t.Fatalf("Compare(element %d wrong) = %+v, want one mismatch at %d", tc.index, m, tc.index)
			}
			if want := "[" + strconv.Itoa(tc.index) + "]"; !strings.Contains(err.Error(), want) {
				t.Errorf("Compare() error %q does not name %s", err, want)
			}
		})
	}
}

func TestCompareManyWrong(t *testing.T) {
	want := make([]float32, 100)
	got := make([]float32, 100)
	for i := 10; i < 20; i++ {
		got[i] = 1
	}
	var m *MismatchError
	if err := Compare(got, want); !errors.As(err, &m) {
		t.Fatalf("Compare() = %v, want a *MismatchError", err)
	}
	wantFirst := []Mismatch{{10, 1, 0}, {11, 1, 0}, {12, 1, 0}, {13, 1, 0}}
	if m.Count != 10 || !cmp.Equal(m.First, wantFirst) {
		t.Errorf("Compare() = %+v, want 10 wrong, first %v", m, wantFirst)
	}
	if !strings.HasPrefix(m.Error(), "10 of 100 elements wrong: [10] = 1, want 0,") || !strings.HasSuffix(m.Error(), "…") {
		t.Errorf("Error() = %q", m.Error())
	}
}

func TestCompareLength(t *testing.T) {
	if err := Compare(make([]float32, 3), make([]float32, 4)); err == nil {
		t.Error("Compare(3 elements, want 4) = nil, want an error")
	}
}

// The saxpy inputs keep every result exact: float64 arithmetic, which
// cannot round these values, gives the same numbers.
func TestSAXPYWantIsExact(t *testing.T) {
	x, y := saxpyInputs(1 << 16)
	w := saxpyWant(saxpyA, x, y)
	for i := range w {
		exact := float64(saxpyA)*float64(x[i]) + float64(y[i])
		if float64(w[i]) != exact {
			t.Fatalf("saxpyWant()[%d] = %v, want %v exactly", i, w[i], exact)
		}
	}
}

// fmaWant's closed form is what the kernel's arithmetic gives, step by
// step (simulateFMALoop follows the PTX instruction by instruction).
func TestFMAWantMatchesTheKernel(t *testing.T) {
	for _, trips := range []int{0, 1, 2, 7} {
		got := simulateFMALoop(5000, trips)
		if err := Compare(got, fmaWant(5000, trips)); err != nil {
			t.Errorf("trips %d: the kernel's arithmetic and fmaWant differ: %v", trips, err)
		}
	}
}

// At MaxFMATrips the largest chain is still exact in float32, and so is
// the largest sum of chains.
func TestFMAExactAtMaxTrips(t *testing.T) {
	start := fmaStartMask + fmaChains - 1
	x := float32(start)
	pairs := MaxFMATrips * fmaUnroll
	for range pairs {
		x = fma32(fmaA, fmaB, x)
		x = fma32(fmaC, fmaD, x)
	}
	if want := start + pairs*fmaStep; x != float32(want) || float64(x) != float64(want) {
		t.Fatalf("chain after %d pairs = %v, want %d exactly", pairs, x, want)
	}
	if peak := float64(start + pairs*fmaStep + fmaA*fmaB); peak >= 1<<24 {
		t.Fatalf("largest intermediate %v is not below 2^24", peak)
	}
	if sum := fmaChains * (start + pairs*fmaStep); sum >= 1<<24 {
		t.Fatalf("largest sum %d is not below 2^24", sum)
	}
	w := fmaWant(fmaStartMask+1, MaxFMATrips)
	if last, want := w[fmaStartMask], fmaChains*(fmaStartMask+pairs*fmaStep)+fmaChains*(fmaChains-1)/2; float64(last) != float64(want) {
		t.Errorf("fmaWant at MaxFMATrips = %v, want %d", last, want)
	}
}

// The constants are what the kernel's exactness argument needs: odd,
// 11 significant bits, a*b + c*d = fmaStep.
func TestFMAConstants(t *testing.T) {
	for _, v := range []int{fmaA, fmaB, -fmaC, fmaD} {
		if v%2 == 0 || v < 1<<10 || v >= 1<<11 {
			t.Errorf("constant %d: want odd, between 2^10 and 2^11", v)
		}
	}
	if fmaA*fmaB+fmaC*fmaD != fmaStep || fmaStep <= 0 {
		t.Errorf("a*b + c*d = %d, want fmaStep %d > 0", fmaA*fmaB+fmaC*fmaD, fmaStep)
	}
}
