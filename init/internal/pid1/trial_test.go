package pid1

import (
	"errors"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/layout"
)

type countingWatchdog struct{ pings int }

func (w *countingWatchdog) Ping() error { w.pings++; return nil }

// A trial committed in time keeps the watchdog pinged and never reboots;
// one past its deadline reboots; a failing boot-order read is no commit.
func TestTrialWatch(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	// run sends 100 ticks 10 s apart; the trial commits at tick
	// commitAt. It returns the reboot's reason and the ticks taken.
	run := func(commitAt int, wd *countingWatchdog, readErr bool) (rebooted string, ticks int) {
		ch := make(chan time.Time)
		done := make(chan struct{})
		go func() {
			defer close(done)
			var w watchdog
			if wd != nil {
				w = wd
			}
			calls := 0
			trialWatch(ch, start.Add(10*time.Minute), func() (bool, error) {
				calls++
				if readErr {
					return false, errors.New("efivarfs gone")
				}
				return calls >= commitAt, nil
			}, w, func(why string) { rebooted = why })
		}()
		for ticks = 0; ticks < 100; ticks++ {
			select {
			case ch <- start.Add(time.Duration(ticks+1) * 10 * time.Second):
			case <-done:
				return rebooted, ticks
			}
		}
		close(ch)
		<-done
		return rebooted, ticks
	}
	wd := &countingWatchdog{}
	if why, _ := run(5, wd, false); why != "" {
		t.Errorf("a trial committed in time rebooted: %s", why)
	}
	if wd.pings != 100 {
		t.Errorf("watchdog pinged %d times in 100 ticks, want every tick, after the commit too", wd.pings)
	}
	if why, ticks := run(1000, &countingWatchdog{}, false); why == "" || ticks != 61 {
		t.Errorf("an uncommitted trial: rebooted %q after %d ticks, want a reboot at 10 min (61 ticks)", why, ticks)
	}
	if why, _ := run(1, nil, true); why == "" {
		t.Error("unreadable boot variables counted as a commit")
	}
	if why, ticks := run(3, nil, false); why != "" || ticks != 3 {
		t.Errorf("no watchdog: %q after %d ticks, want a return at the commit", why, ticks)
	}
}

func TestTrialTimeout(t *testing.T) {
	if d, err := trialTimeout(map[string]string{}); err != nil || d != layout.DefaultTrial*time.Second {
		t.Errorf("default: %v, %v", d, err)
	}
	if d, err := trialTimeout(map[string]string{layout.TrialParam: "120"}); err != nil || d != 2*time.Minute {
		t.Errorf("120: %v, %v", d, err)
	}
	for _, v := range []string{"5", "x", "-1", "99999999"} {
		if _, err := trialTimeout(map[string]string{layout.TrialParam: v}); err == nil {
			t.Errorf("%s accepted", v)
		}
	}
}
