package pid1

import (
	"slices"
	"testing"

	"github.com/rigos/rigos/pkg/measure"
)

// The phases init's steps measure are the ones manifests expect, in the
// same order: a verifier replays PCR 15 from them.
func TestBootStepsMeasureBootPhases(t *testing.T) {
	if got := phases(bootSteps); !slices.Equal(got, measure.BootPhases) {
		t.Errorf("phases(bootSteps) = %v, want %v", got, measure.BootPhases)
	}
	seen := map[string]bool{}
	for i, st := range bootSteps {
		if st.name == "" || st.fn == nil {
			t.Errorf("bootSteps[%d] = {%q, fn %v}, want a name and a function", i, st.name, st.fn != nil)
		}
		if seen[st.name] {
			t.Errorf("bootSteps[%d]: name %q used twice", i, st.name)
		}
		seen[st.name] = true
	}
}
