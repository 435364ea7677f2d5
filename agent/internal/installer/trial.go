package installer

import (
	"fmt"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
)

// Commit makes a trial's slot the default: its entry goes first in
// BootOrder, then Committed (if set) drops the other builds' state keys.
// It runs once; later calls do nothing.
func (i *Installer) Commit(t *bootslot.Trial) {
	i.commitOnce.Do(func() {
		if i.CanCommit != nil {
			if why := i.CanCommit(); why != "" {
				i.Log.Error("not committing the update: the old slot boots next", "slot", t.Slot, "why", why)
				i.Out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: &apiv1.UpdateEvent{
					State: apiv1.UpdateState_UPDATE_STATE_FAILED, Slot: string(t.Slot), UnixMs: i.now().UnixMilli(),
					Reason: "not committed: " + why + "; the trial ends in a reboot into the old slot",
				}}})
				return
			}
		}
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
