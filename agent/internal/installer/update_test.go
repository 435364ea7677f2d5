package installer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/bootslot/bootslottest"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
	"github.com/rigos/rigos/pkg/update/updatetest"
)

// updateRig is newRig's stick booted from slot A, with its slot B
// partition as the file vda3 and a folder as its mounted ESP.
type updateRig struct {
	*rig
	updates chan *apiv1.UpdateEvent
	system  []byte
	ukis    map[layout.Slot][]byte
}

func newUpdateRig(t *testing.T, busy func() bool) *updateRig {
	r := &updateRig{rig: newRig(t), updates: make(chan *apiv1.UpdateEvent, 64)}
	if err := os.WriteFile(filepath.Join(r.dev, "vda3"), make([]byte, 8*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	out := session.NewOutbox(nil)
	out.Attach(func(m *apiv1.AgentMessage) error { r.updates <- m.GetUpdateEvent(); return nil })
	r.inst.Out, r.inst.ESP, r.inst.Poll = out, t.TempDir(), 10*time.Millisecond
	r.inst.Busy = nil
	if busy != nil {
		r.inst.Hold = func(string) (func(), bool) { return func() {}, !busy() }
	}
	r.system = make([]byte, 5*mib+17)
	rand.Read(r.system)
	r.ukis = map[layout.Slot][]byte{}
	for _, s := range layout.Slots() {
		r.ukis[s] = updatetest.FakeUKI(layout.SlotParam+"="+string(s), 3000)
	}
	return r
}

func (r *updateRig) request(force bool) *apiv1.Update {
	s, a, b := sha256.Sum256(r.system), sha256.Sum256(r.ukis[layout.SlotA]), sha256.Sum256(r.ukis[layout.SlotB])
	return &apiv1.Update{RequestId: "u1", Build: "next", Force: force,
		SystemSize: int64(len(r.system)), SystemSha256: s[:],
		UkiASize: int64(len(r.ukis[layout.SlotA])), UkiASha256: a[:], UkiBSize: int64(len(r.ukis[layout.SlotB])), UkiBSha256: b[:]}
}

// send streams the slot's files as the verifier does.
func (r *updateRig) send(slot layout.Slot) {
	for _, p := range []struct {
		part apiv1.UpdatePart
		data []byte
	}{{apiv1.UpdatePart_UPDATE_PART_SYSTEM, r.system}, {apiv1.UpdatePart_UPDATE_PART_UKI, r.ukis[slot]}} {
		for off := 0; off < len(p.data); off += mib {
			r.inst.HandleUpdateChunk(&apiv1.UpdateChunk{RequestId: "u1", Part: p.part, Offset: int64(off), Data: p.data[off:min(off+mib, len(p.data))]})
		}
	}
}

func (r *updateRig) next(t *testing.T) *apiv1.UpdateEvent {
	t.Helper()
	select {
	case e := <-r.updates:
		return e
	case <-time.After(time.Minute):
		t.Fatal("no update event within a minute")
		return nil
	}
}

// An update from slot A writes slot B, adds its boot entry, sets it in
// BootNext and leaves BootOrder alone, so the boot after the next is
// slot A again unless the update is committed.
func TestUpdateWritesOtherSlotAndBootNext(t *testing.T) {
	r := newUpdateRig(t, nil)
	efiboot.Vars{Dir: r.efi}.SetBootOrder([]uint16{0})
	r.inst.HandleUpdate(r.request(false))
	if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_RECEIVING || e.GetSlot() != "b" || e.GetRequestId() != "u1" {
		t.Fatalf("first event %v, want RECEIVING slot b", e)
	}
	r.send(layout.SlotB)
	e := r.next(t)
	if e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING || e.GetBuild() != "next" {
		t.Fatalf("last event %v, want REBOOTING", e)
	}
	select {
	case <-r.inst.Done():
	case <-time.After(time.Minute):
		t.Fatal("Done not closed after a successful update")
	}
	part, _ := os.ReadFile(filepath.Join(r.dev, "vda3"))
	if !bytes.HasPrefix(part, r.system) {
		t.Error("slot B's partition does not hold the new system image")
	}
	if uki, _ := os.ReadFile(filepath.Join(r.inst.ESP, layout.SlotUKI(layout.SlotB))); !bytes.Equal(uki, r.ukis[layout.SlotB]) {
		t.Error("slot B's UKI is not on the ESP")
	}
	vars := efiboot.Vars{Dir: r.efi}
	entry, err := vars.Entry(uint16(e.GetBootEntry()))
	if err != nil || entry.Path != `\EFI\RIGOS\rigos-b.efi` || entry.Partition.Number != 1 || entry.Description != "RigOS B" {
		t.Errorf("boot entry %+v, %v", entry, err)
	}
	if b, err := os.ReadFile(filepath.Join(r.efi, "BootNext-"+efiboot.GlobalGUID)); err != nil || len(b) != 6 || uint32(b[4])|uint32(b[5])<<8 != e.GetBootEntry() {
		t.Errorf("BootNext = % x, %v; want entry %d", b, err, e.GetBootEntry())
	}
	if order, _ := vars.BootOrder(); len(order) != 1 || order[0] != 0 {
		t.Errorf("BootOrder = %v, want [0] untouched", order)
	}
	// Nothing more is accepted: the node reboots.
	r.inst.HandleUpdate(r.request(false))
	if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_FAILED {
		t.Errorf("a second update got %v, want FAILED", e)
	}
}

// A corrupted stream fails the update before anything is bootable, and
// the node takes the next one.
func TestUpdateCorruptedStream(t *testing.T) {
	r := newUpdateRig(t, nil)
	good := bytes.Clone(r.system)
	req := r.request(false)
	r.system[4*mib] ^= 0xff
	r.inst.HandleUpdate(req)
	r.next(t) // RECEIVING
	r.send(layout.SlotB)
	e := r.next(t)
	if e.GetState() != apiv1.UpdateState_UPDATE_STATE_FAILED || !strings.Contains(e.GetReason(), "SHA-256") || !strings.Contains(e.GetReason(), "still boots") {
		t.Fatalf("event %v, want FAILED naming the digest", e)
	}
	if _, err := os.Stat(filepath.Join(r.inst.ESP, layout.SlotUKI(layout.SlotB))); err == nil {
		t.Error("slot B has a UKI after a corrupted update")
	}
	if _, err := os.Stat(filepath.Join(r.efi, "BootNext-"+efiboot.GlobalGUID)); err == nil {
		t.Error("BootNext set after a corrupted update")
	}
	r.system = good
	r.inst.HandleUpdate(r.request(false))
	if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_RECEIVING {
		t.Fatalf("after a failure the next update got %v, want RECEIVING", e)
	}
	r.send(layout.SlotB)
	if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
		t.Fatalf("event %v, want REBOOTING", e)
	}
}

// While workloads run the written update waits (WAITING), then reboots
// when they end; forced, it reboots at once.
func TestUpdateWaitsForWorkloads(t *testing.T) {
	for _, force := range []bool{false, true} {
		running := make(chan bool, 1)
		running <- true
		busy := func() bool { b := <-running; running <- b; return b }
		r := newUpdateRig(t, busy)
		r.inst.HandleUpdate(r.request(force))
		r.next(t)
		r.send(layout.SlotB)
		e := r.next(t)
		if force {
			if e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
				t.Fatalf("forced: event %v, want REBOOTING", e)
			}
			continue
		}
		if e.GetState() != apiv1.UpdateState_UPDATE_STATE_WAITING {
			t.Fatalf("event %v, want WAITING while a workload runs", e)
		}
		select {
		case <-r.inst.Done():
			t.Fatal("Done closed while a workload runs")
		default:
		}
		<-running
		running <- false
		if e := r.next(t); e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
			t.Fatalf("event %v, want REBOOTING once the workloads ended", e)
		}
	}
}

// The state is handed over to the written slot's UKI before it is set to
// boot; a failed handover fails the update (no BootNext), and no state
// to hand over lets it go on.
func TestUpdateHandsOverState(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want apiv1.UpdateState
	}{
		"handed over": {nil, apiv1.UpdateState_UPDATE_STATE_REBOOTING},
		"no state":    {ErrNoState, apiv1.UpdateState_UPDATE_STATE_FAILED},
		"failed":      {errors.New("TPM gone"), apiv1.UpdateState_UPDATE_STATE_FAILED},
	} {
		t.Run(name, func(t *testing.T) {
			r := newUpdateRig(t, nil)
			var got []byte
			r.inst.HandOver = func(uki io.ReaderAt, build string) error {
				got, _ = io.ReadAll(io.NewSectionReader(uki, 0, 1<<30))
				if build != "next" {
					t.Errorf("handed over to build %q", build)
				}
				return tc.err
			}
			r.inst.HandleUpdate(r.request(false))
			r.next(t)
			r.send(layout.SlotB)
			e := r.next(t)
			if e.GetState() != tc.want {
				t.Fatalf("event %v, want %s", e, tc.want)
			}
			if !bytes.Equal(got, r.ukis[layout.SlotB]) {
				t.Error("HandOver did not get slot B's UKI")
			}
			_, err := os.Stat(filepath.Join(r.efi, "BootNext-"+efiboot.GlobalGUID))
			if set := err == nil; set != (tc.want == apiv1.UpdateState_UPDATE_STATE_REBOOTING) {
				t.Errorf("BootNext set: %v", set)
			}
			if tc.err != nil && !strings.Contains(e.GetReason(), tc.err.Error()) {
				t.Errorf("reason %q", e.GetReason())
			}
		})
	}
}

// On an uncommitted trial boot the other slot is the fallback: an update
// is refused, and nothing is written.
func TestUpdateRefusedDuringTrial(t *testing.T) {
	r := newUpdateRig(t, nil)
	r.inst.Slot, r.inst.EFIVars = layout.SlotB, bootslottest.Vars(t, 1)
	r.inst.HandleUpdate(r.request(false))
	e := r.next(t)
	if e.GetState() != apiv1.UpdateState_UPDATE_STATE_FAILED || !strings.Contains(e.GetReason(), "uncommitted trial of slot b") {
		t.Fatalf("update during a trial: %v, want FAILED naming the trial", e)
	}
	if _, err := os.Stat(filepath.Join(r.inst.ESP, layout.SlotUKI(layout.SlotA))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ESP changed: %v", err)
	}
}
