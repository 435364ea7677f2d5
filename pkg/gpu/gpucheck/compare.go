package gpucheck

import (
	"fmt"
	"strings"
)

// Mismatch is one element a GPU computed wrongly.
type Mismatch struct {
	Index     int
	Got, Want float32
}

// MismatchError reports a computed result that differs from the
// expected one.
type MismatchError struct {
	// Count is how many elements differ.
	Count int
	// Len is how many elements were compared.
	Len int
	// First are the first differing elements, by index (at most
	// maxReported).
	First []Mismatch
}

const maxReported = 4

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d elements wrong:", e.Count, e.Len)
	for i, m := range e.First {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " [%d] = %v, want %v", m.Index, m.Got, m.Want)
	}
	if e.Count > len(e.First) {
		b.WriteString(", …")
	}
	return b.String()
}

// Compare checks a computed result against the expected one, element
// by element. The check's inputs are chosen so that every value is
// exactly representable in float32 and no operation rounds, so the
// comparison is exact: any difference, including a NaN, is an error (a
// *MismatchError naming the first wrong indexes). There is no tolerance
// to hide a slightly wrong GPU.
func Compare(got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d elements computed, want %d", len(got), len(want))
	}
	var e *MismatchError
	for i := range want {
		if got[i] == want[i] { // false for NaN
			continue
		}
		if e == nil {
			e = &MismatchError{Len: len(want)}
		}
		e.Count++
		if len(e.First) < maxReported {
			e.First = append(e.First, Mismatch{Index: i, Got: got[i], Want: want[i]})
		}
	}
	if e != nil {
		return e
	}
	return nil
}

// saxpyA is the saxpy multiplier: two fractional bits, so the results
// have some (x*2.75 and y below 2^13: exact in float32's 24 bits).
const saxpyA = 2.75

// saxpyInputs are the saxpy kernel's inputs for n elements: small
// integers, x[i] in [0, 2038] and y[i] in [-510, 510].
func saxpyInputs(n int) (x, y []float32) {
	x, y = make([]float32, n), make([]float32, n)
	for i := range n {
		x[i] = float32(i % 2039)
		y[i] = float32(i%1021) - 510
	}
	return x, y
}

// saxpyWant is what the saxpy kernel must compute: a*x[i] + y[i], exact.
func saxpyWant(a float32, x, y []float32) []float32 {
	w := make([]float32, len(x))
	for i := range x {
		w[i] = float32(a*x[i]) + y[i] // exact whether or not Go fuses it
	}
	return w
}

// fmaWant is what fma_loop must store for threads threads after trips
// loop trips: for thread i, the sum over chains j of
// (i & 4095) + j + trips*fmaUnroll*fmaStep. Exact for trips up to
// MaxFMATrips.
func fmaWant(threads, trips int) []float32 {
	w := make([]float32, threads)
	grow := trips * fmaUnroll * fmaStep
	for i := range w {
		sum := 0
		for j := range fmaChains {
			sum += i&fmaStartMask + j + grow
		}
		w[i] = float32(sum)
	}
	return w
}
