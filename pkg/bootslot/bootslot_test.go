package bootslot

import (
	"testing"

	"github.com/rigos/rigos/pkg/bootslot/bootslottest"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
)

func TestDetect(t *testing.T) {
	dir := bootslottest.Vars(t, 1)
	tr, err := Detect(dir, layout.SlotB)
	if err != nil || tr == nil || tr.Entry != 1 || tr.Option != bootslottest.Option(layout.SlotB) {
		t.Fatalf("Detect(slot b booted through BootNext) = %+v, %v", tr, err)
	}
	if ok, err := tr.Committed(dir); err != nil || ok {
		t.Errorf("Committed before the commit = %v, %v", ok, err)
	}
	if err := (efiboot.Vars{Dir: dir, Unlock: func(string) error { return nil }}).SetBootOrder([]uint16{1, 0}); err != nil {
		t.Fatal(err)
	}
	if ok, err := tr.Committed(dir); err != nil || !ok {
		t.Errorf("Committed after the commit = %v, %v", ok, err)
	}
	if tr, err := Detect(dir, layout.SlotB); err != nil || tr != nil {
		t.Errorf("Detect after the commit = %+v, %v; want no trial", tr, err)
	}
	// The firmware puts an entry of its own first: the committed slot is
	// still committed, and a trial still a trial.
	v := efiboot.Vars{Dir: dir, Unlock: func(string) error { return nil }}
	other := bootslottest.Option(layout.SlotB)
	other.Description, other.Path = "Windows Boot Manager", `\EFI\Microsoft\Boot\bootmgfw.efi`
	n, err := v.Add(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetBootOrder([]uint16{n, 9, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if tr, err := Detect(dir, layout.SlotB); err != nil || tr != nil {
		t.Errorf("Detect after the commit, a firmware entry first = %+v, %v; want no trial", tr, err)
	}
	if err := v.SetBootOrder([]uint16{n, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if tr, err := Detect(dir, layout.SlotB); err != nil || tr == nil {
		t.Errorf("Detect of a trial, a firmware entry first = %+v, %v; want the trial", tr, err)
	}
	for name, tc := range map[string]struct {
		current uint16
		slot    layout.Slot
	}{
		"committed slot A":           {0, layout.SlotA},
		"B's entry, slot A running":  {1, layout.SlotA},
		"an entry that is not there": {7, layout.SlotB},
	} {
		if tr, err := Detect(bootslottest.Vars(t, tc.current), tc.slot); err != nil || tr != nil {
			t.Errorf("%s: Detect = %+v, %v; want no trial", name, tr, err)
		}
	}
	if tr, err := Detect(t.TempDir(), layout.SlotB); err != nil || tr != nil {
		t.Errorf("no boot variables: %+v, %v; want no trial", tr, err)
	}
}
