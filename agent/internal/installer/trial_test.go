package installer

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
)

// trialVars is an efivarfs folder after an update booted slot B once:
// Boot0000 is slot A's entry, first in BootOrder, Boot0001 slot B's,
// BootCurrent 1.
func trialVars(t *testing.T, current uint16) (string, efiboot.LoadOption) {
	dir := t.TempDir()
	v := efiboot.Vars{Dir: dir, Unlock: func(string) error { return nil }}
	opt := func(s layout.Slot) efiboot.LoadOption {
		return efiboot.LoadOption{Attributes: efiboot.LoadOptionActive, Description: "RigOS",
			Partition: efiboot.Partition{Number: 1, StartLBA: 2048, SizeLBA: 1 << 17, GUID: uuid.MustParse("0b7c9d4e-1111-4222-8333-444455556666")},
			Path:      `\EFI\RIGOS\rigos-` + string(s) + `.efi`}
	}
	for _, s := range layout.Slots() {
		if _, err := v.Add(opt(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.SetBootOrder([]uint16{0}); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint32(nil, 6)
	if err := os.WriteFile(filepath.Join(dir, "BootCurrent-"+efiboot.GlobalGUID), binary.LittleEndian.AppendUint16(b, current), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, opt(layout.SlotB)
}

func TestDetectTrial(t *testing.T) {
	dir, optB := trialVars(t, 1)
	tr, err := bootslot.Detect(dir, layout.SlotB)
	if err != nil || tr == nil || tr.Entry != 1 || tr.Option != optB {
		t.Fatalf("bootslot.Detect(slot b booted through BootNext) = %+v, %v", tr, err)
	}
	for name, tc := range map[string]struct {
		current uint16
		slot    layout.Slot
	}{
		"committed slot A":          {0, layout.SlotA},
		"B's entry, slot A running": {1, layout.SlotA},
	} {
		dir, _ := trialVars(t, tc.current)
		if tr, err := bootslot.Detect(dir, tc.slot); err != nil || tr != nil {
			t.Errorf("%s: DetectTrial = %+v, %v; want no trial", name, tr, err)
		}
	}
	if tr, err := bootslot.Detect(t.TempDir(), layout.SlotB); err != nil || tr != nil {
		t.Errorf("no boot variables: %+v, %v; want no trial", tr, err)
	}
}

func trialInstaller(t *testing.T, dir string) (*Installer, chan *apiv1.UpdateEvent) {
	events := make(chan *apiv1.UpdateEvent, 8)
	out := session.NewOutbox(nil)
	out.Attach(func(m *apiv1.AgentMessage) error { events <- m.GetUpdateEvent(); return nil })
	return &Installer{Out: out, Log: slog.New(slog.DiscardHandler), EFIVars: dir, Slot: layout.SlotB}, events
}

// Commit puts the trial's entry first and drops the other builds' keys,
// once.
func TestCommit(t *testing.T) {
	dir, _ := trialVars(t, 1)
	inst, events := trialInstaller(t, dir)
	dropped := 0
	inst.Committed = func() error { dropped++; return nil }
	tr, err := bootslot.Detect(dir, layout.SlotB)
	if err != nil || tr == nil {
		t.Fatal(tr, err)
	}
	inst.Commit(tr)
	inst.Commit(tr)
	if order, _ := (efiboot.Vars{Dir: dir}).BootOrder(); !slices.Equal(order, []uint16{1, 0}) {
		t.Errorf("BootOrder after the commit %v, want [1 0]", order)
	}
	if dropped != 1 {
		t.Errorf("Committed ran %d times, want once", dropped)
	}
	if e := <-events; e.GetState() != apiv1.UpdateState_UPDATE_STATE_COMMITTED || e.GetSlot() != "b" {
		t.Errorf("event %v, want COMMITTED slot b", e)
	}
	select {
	case <-inst.Done():
		t.Error("a committed trial rebooted")
	default:
	}
	if tr, _ := bootslot.Detect(dir, layout.SlotB); tr != nil {
		t.Error("still a trial after the commit")
	}
}
