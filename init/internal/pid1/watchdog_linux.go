package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/layout"
)

// watchdogTimeout is how long a hung rig runs before the hardware
// watchdog resets it; init pings every trialTick.
const (
	watchdogTimeout = 60
	trialTick       = 10 * time.Second
)

// hwWatchdogs are the rig's hardware watchdogs, armed.
type hwWatchdogs []*os.File

// armWatchdogs opens every /dev/watchdogN (which arms it) and sets its
// timeout; none is not an error.
func armWatchdogs() (hwWatchdogs, error) {
	paths, _ := filepath.Glob("/dev/watchdog[0-9]*")
	var out hwWatchdogs
	var errs []error
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, watchdogTimeout); err != nil {
			errs = append(errs, fmt.Errorf("%s: setting its timeout: %w", p, err))
		}
		out = append(out, f)
	}
	return out, errors.Join(errs...)
}

func (w hwWatchdogs) Ping() error {
	var errs []error
	for _, f := range w {
		if err := unix.IoctlWatchdogKeepalive(int(f.Fd())); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// watchTrial, on a trial boot of an update (pkg/bootslot), arms the
// hardware watchdog, so a new build that hangs is reset into the old
// slot, and reboots into the old slot if the agent has not committed
// the update (after the verifier's trusted verdict) within the trial
// timeout (layout.TrialParam).
func (b *boot) watchTrial() error {
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	args, err := cmdline.Parse(string(raw))
	if err != nil {
		return err
	}
	slot, err := bootSlot(args)
	if err != nil {
		return nil // mountSystem says why
	}
	t, err := bootslot.Detect(layout.EFIVarsDir, slot)
	if err != nil {
		say("update trial: reading the boot variables: %v (not watched)", err)
		return nil
	}
	if t == nil {
		return nil
	}
	timeout, err := trialTimeout(args)
	if err != nil {
		return err
	}
	b.trial = true
	wd, err := armWatchdogs()
	if err != nil {
		say("watchdog: %v", err)
	}
	var w watchdog
	if len(wd) > 0 {
		w = wd
	}
	say("update trial: slot %s booted once (Boot%04X); it must be trusted and committed within %s or the rig reboots into the old slot; %d hardware watchdogs armed (%ds)",
		slot, t.Entry, timeout, len(wd), watchdogTimeout)
	deadline := time.Now().Add(timeout)
	go trialWatch(time.NewTicker(trialTick).C, deadline, func() (bool, error) { return t.Committed(layout.EFIVarsDir) }, w, func(why string) {
		say("%s", why)
		rebootNow()
	})
	return nil
}
