package pid1

import (
	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
)

// boot is what the boot steps share.
type boot struct {
	sys      sysfs
	cfg      *bootconfig.Config
	rec      *measure.Recorder
	dev      tpm.Device
	netDone  chan struct{}
	stateErr error // why the state partition is unavailable
	trial    bool  // this boot is an update's uncommitted trial
	gpu      gpuDriver
}

// step is one named task of the boot sequence (bootSteps). When phase is
// set, the phase is measured (into PCR 15 and the runtime log) once fn
// succeeded: it marks that the boot got that far.
type step struct {
	name  string
	fn    func(*boot) error
	phase string
}

// runSteps runs steps in order, measuring each step's phase with measure
// after it. It stops at the first error, which it returns as is: init
// prints it as the reason it reboots.
func runSteps(b *boot, steps []step, measure func(phase string) error) error {
	for _, st := range steps {
		if err := st.fn(b); err != nil {
			return err
		}
		if st.phase == "" {
			continue
		}
		if err := measure(st.phase); err != nil {
			return err
		}
	}
	return nil
}

// phases lists the phases steps measure, in order.
func phases(steps []step) []string {
	var out []string
	for _, st := range steps {
		if st.phase != "" {
			out = append(out, st.phase)
		}
	}
	return out
}
