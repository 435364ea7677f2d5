package pid1

import (
	"errors"
	"slices"
	"testing"
)

// Steps run in order, each phase measured right after its step; the first
// error stops the sequence and comes back unchanged.
func TestRunSteps(t *testing.T) {
	var trace []string
	do := func(name string, err error) func(*boot) error {
		return func(*boot) error { trace = append(trace, name); return err }
	}
	measure := func(p string) error { trace = append(trace, "measure "+p); return nil }
	stop := errors.New("init config: network.mode \"x\"")
	steps := []step{
		{name: "a", fn: do("a", nil), phase: "one"},
		{name: "b", fn: do("b", nil)},
		{name: "c", fn: do("c", nil), phase: "two"},
		{name: "d", fn: do("d", stop), phase: "three"},
		{name: "e", fn: do("e", nil)},
	}
	err := runSteps(&boot{}, steps, measure)
	if err != stop {
		t.Errorf("runSteps() = %v, want %v unwrapped", err, stop)
	}
	if want := []string{"a", "measure one", "b", "c", "measure two", "d"}; !slices.Equal(trace, want) {
		t.Errorf("runSteps() ran %v, want %v", trace, want)
	}
	if got, want := phases(steps), []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Errorf("phases() = %v, want %v", got, want)
	}

	// A phase that cannot be measured stops the boot too.
	trace = nil
	tpmGone := errors.New("TPM gone")
	err = runSteps(&boot{}, steps[:3], func(string) error { return tpmGone })
	if err != tpmGone || !slices.Equal(trace, []string{"a"}) {
		t.Errorf("runSteps(measure fails) = %v after %v, want %v after [a]", err, trace, tpmGone)
	}
}
