package pid1

import (
	"fmt"
	"strconv"
	"time"

	"github.com/rigos/rigos/pkg/layout"
)

// trialTimeout returns how long a trial boot has (layout.TrialParam on
// the measured command line, in seconds, or layout.DefaultTrial).
func trialTimeout(args map[string]string) (time.Duration, error) {
	v, ok := args[layout.TrialParam]
	if !ok {
		return layout.DefaultTrial * time.Second, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 30 || n > 24*3600 {
		return 0, fmt.Errorf("kernel command line: %s=%q: want seconds, 30 to 86400", layout.TrialParam, v)
	}
	return time.Duration(n) * time.Second, nil
}

// watchdog is a hardware watchdog: it resets the machine unless pinged.
type watchdog interface {
	Ping() error
}

// trialWatch watches a trial boot of an update until committed reports
// it committed: it pings wd (if any) every tick (a tick carries the
// time), so a boot that hangs
// is reset by the hardware, and calls reboot if the deadline passes
// first. After the commit the watchdog keeps being pinged: the rig stays
// protected against hangs. It returns when reboot returns or, with no
// watchdog, at the commit.
func trialWatch(ticks <-chan time.Time, deadline time.Time, committed func() (bool, error), wd watchdog, reboot func(why string)) {
	done := false
	for now := range ticks {
		if wd != nil {
			if err := wd.Ping(); err != nil {
				say("watchdog: %v", err)
			}
		}
		if done {
			continue
		}
		ok, err := committed()
		if err != nil {
			say("update trial: reading the boot order: %v", err)
		}
		if ok {
			say("update trial: committed; the new slot is the default")
			done = true
			if wd == nil {
				return
			}
			continue
		}
		if now.After(deadline) {
			reboot(fmt.Sprintf("update trial: not trusted and committed by %s: rebooting into the old slot", deadline.Format(time.TimeOnly)))
			return
		}
	}
}
