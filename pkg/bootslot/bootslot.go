// Package bootslot tells, from the firmware's boot variables, whether
// this boot is the trial of an update: the firmware booted a slot's
// entry once, through BootNext, and BootOrder still starts elsewhere
// (the old slot), so the next boot is the old slot's unless the update
// is committed (its entry put first). Init watches a trial (watchdog,
// deadline); the agent commits it once the verifier has said trusted.
package bootslot

import (
	"errors"
	"os"
	"slices"
	"strings"

	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
)

// Trial is a trial boot of Slot through boot entry Entry.
type Trial struct {
	Entry  uint16
	Option efiboot.LoadOption
	Slot   layout.Slot
}

// Detect reports whether this boot is a trial of slot: BootCurrent is
// RigOS's entry for slot's UKI, and it is not the first of RigOS's slot
// entries in BootOrder. Entries that are not RigOS's slot entries are
// passed over: firmware may put its own (a network boot, a vendor's
// recovery, the stick) ahead of them at any time, and that does not make
// a committed slot a trial again.
// nil means a committed boot, one from an entry RigOS did not write (the
// stick's removable-media path, a firmware default), or a firmware
// without boot variables.
func Detect(efiVars string, slot layout.Slot) (*Trial, error) {
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
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !isSlotUKI(opt.Path, slot) {
		return nil, nil
	}
	committed, err := firstInOrder(v, cur)
	if err != nil || committed {
		return nil, err
	}
	return &Trial{Entry: cur, Option: opt, Slot: slot}, nil
}

// Committed reports whether the trial's entry is now first in BootOrder.
func (t *Trial) Committed(efiVars string) (bool, error) {
	return firstInOrder(efiboot.Vars{Dir: efiVars}, t.Entry)
}

// firstInOrder reports whether entry n is the first of RigOS's slot
// entries in BootOrder; entries that are not (or cannot be read) are
// passed over.
func firstInOrder(v efiboot.Vars, n uint16) (bool, error) {
	order, err := v.BootOrder()
	if err != nil {
		return false, err
	}
	for _, e := range order {
		opt, err := v.Entry(e)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(layout.Slots(), func(s layout.Slot) bool { return isSlotUKI(opt.Path, s) }) {
			return e == n, nil
		}
	}
	return false, nil
}

// isSlotUKI reports whether a load option's file path is slot's UKI.
func isSlotUKI(path string, slot layout.Slot) bool {
	return strings.EqualFold(path, `\`+strings.ReplaceAll(layout.SlotUKI(slot), "/", `\`))
}
