package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
)

// Trial is a boot of an updated slot that is not committed yet: the
// firmware booted the slot's entry once, through BootNext, and BootOrder
// still starts elsewhere (the old slot), so the boot after this one is
// the old slot's unless the update is committed.
type Trial struct {
	Entry  uint16
	Option efiboot.LoadOption
	Slot   layout.Slot

	once sync.Once
	done chan struct{} // closed once committed
}

// DetectTrial reports whether this boot is a trial of slot: BootCurrent
// is RigOS's entry for slot's UKI, and BootOrder does not start with it.
// nil means a committed boot (or one from the removable-media path, or a
// firmware without boot variables).
func DetectTrial(efiVars string, slot layout.Slot) (*Trial, error) {
	v := efiboot.Vars{Dir: efiVars}
	cur, err := v.BootCurrent()
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	opt, err := v.Entry(cur)
	if errors.Is(err, efiboot.ErrNotOurs) || errors.Is(err, os.ErrNotExist) {
		return nil, nil // an entry RigOS did not write: the stick's, a firmware default
	}
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(opt.Path, `\`+strings.ReplaceAll(layout.SlotUKI(slot), "/", `\`)) {
		return nil, nil
	}
	order, err := v.BootOrder()
	if err != nil {
		return nil, err
	}
	if len(order) > 0 && order[0] == cur {
		return nil, nil
	}
	return &Trial{Entry: cur, Option: opt, Slot: slot, done: make(chan struct{})}, nil
}

// TrialDeadline is how long a trial boot waits for a trusted verdict
// before it reboots into the old slot.
const TrialDeadline = 15 * time.Minute

// RunTrial watches a trial boot: Commit, on the node's first trusted
// verdict, makes the slot the default; without one within deadline the
// node reboots (Done), and the firmware boots the old slot.
func (i *Installer) RunTrial(ctx context.Context, t *Trial, deadline time.Duration) {
	i.Log.Info("trial boot of an update: it becomes the default once trusted", "slot", t.Slot, "entry", fmt.Sprintf("Boot%04X", t.Entry), "deadline", deadline)
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-t.done:
	case <-timer.C:
		reason := fmt.Sprintf("slot %s was not trusted within %s of booting: rebooting into the old slot", t.Slot, deadline)
		i.Log.Error("trial boot failed", "slot", t.Slot, "reason", reason)
		i.Out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: &apiv1.UpdateEvent{
			State: apiv1.UpdateState_UPDATE_STATE_FAILED, Slot: string(t.Slot), Reason: reason, UnixMs: i.now().UnixMilli(),
		}}})
		i.reboot()
	}
}

// Commit makes a trial's slot the default: its entry goes first in
// BootOrder, then Committed (if set) drops the other builds' state keys.
// It runs once; later calls do nothing.
func (i *Installer) Commit(t *Trial) {
	t.once.Do(func() {
		efiVars := or(i.EFIVars, layout.EFIVarsDir)
		first := func() error {
			_, err := efiboot.Vars{Dir: efiVars}.AddFirst(t.Option)
			return err
		}
		var err error
		if i.EFIVars == "" {
			err = efiboot.Writable(efiVars, first)
		} else {
			err = first()
		}
		if err != nil {
			i.Log.Error("committing the update failed: the next boot is the old slot's", "slot", t.Slot, "err", err)
			return
		}
		close(t.done)
		ev := &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: string(t.Slot), BootEntry: uint32(t.Entry), UnixMs: i.now().UnixMilli()}
		if i.Committed != nil {
			if err := i.Committed(); err != nil {
				ev.Reason = "the other builds' state keys could not be dropped: " + err.Error()
				i.Log.Error("dropping the other builds' state keys", "err", err)
			}
		}
		i.Log.Info("update committed", "slot", t.Slot, "entry", fmt.Sprintf("Boot%04X", t.Entry))
		i.Out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: ev}})
	})
}

func (i *Installer) now() time.Time {
	if i.Now != nil {
		return i.Now()
	}
	return time.Now()
}
