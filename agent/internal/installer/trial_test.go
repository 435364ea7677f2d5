package installer

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/bootslot/bootslottest"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
)

func trialInstaller(t *testing.T, dir string) (*Installer, chan *apiv1.UpdateEvent) {
	events := make(chan *apiv1.UpdateEvent, 8)
	out := session.NewOutbox(nil)
	out.Attach(func(m *apiv1.AgentMessage) error { events <- m.GetUpdateEvent(); return nil })
	return &Installer{Out: out, Log: slog.New(slog.DiscardHandler), EFIVars: dir, Slot: layout.SlotB}, events
}

// Commit puts the trial's entry first and drops the other builds' keys,
// once.
func TestCommit(t *testing.T) {
	dir := bootslottest.Vars(t, 1)
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

// A build that did not open the state does not commit: the trial ends in
// the old slot, which still has the state.
func TestNoCommitWithoutState(t *testing.T) {
	dir := bootslottest.Vars(t, 1)
	inst, events := trialInstaller(t, dir)
	inst.CanCommit = func() string { return "this build did not open the state" }
	tr, _ := bootslot.Detect(dir, layout.SlotB)
	inst.Commit(tr)
	if order, _ := (efiboot.Vars{Dir: dir}).BootOrder(); !slices.Equal(order, []uint16{0}) {
		t.Errorf("BootOrder %v, want [0] untouched", order)
	}
	if e := <-events; e.GetState() != apiv1.UpdateState_UPDATE_STATE_FAILED || !strings.Contains(e.GetReason(), "did not open the state") {
		t.Errorf("event %v, want FAILED naming the state", e)
	}
}
