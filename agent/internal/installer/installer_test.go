package installer

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/imager/disk"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
)

const mib = 1 << 20

// rig is a node's disks as files: the stick (vda) and a blank internal
// disk (vdb), their sysfs entries and an efivarfs folder.
type rig struct {
	sys, dev, efi string
	events        chan *apiv1.InstallEvent
	inst          *Installer
}

func newRig(t *testing.T, busy ...string) *rig {
	t.Helper()
	r := &rig{sys: t.TempDir(), dev: t.TempDir(), efi: t.TempDir(), events: make(chan *apiv1.InstallEvent, 16)}
	stick := filepath.Join(r.dev, "vda")
	if _, err := disk.Write(stick, bytes.Repeat([]byte("U"), mib), bytes.Repeat([]byte("S"), 4*mib),
		disk.Layout{ESP: disk.MinESP, System: 8 * mib, State: 8 * mib, Seed: []byte("rig")}); err != nil {
		t.Fatal(err)
	}
	internal := filepath.Join(r.dev, "vdb")
	if err := os.WriteFile(internal, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(internal, 160*mib); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		p = filepath.Join(r.sys, "class/block", p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"vda", "vdb"} {
		fi, _ := os.Stat(filepath.Join(r.dev, d))
		write(d+"/size", strconv.FormatInt(fi.Size()/512, 10))
		write(d+"/ro", "0")
	}
	for i, name := range []string{layout.ESPPartition, layout.SystemPartition(layout.SlotA), layout.SystemPartition(layout.SlotB), layout.StatePartition} {
		part := "vda" + strconv.Itoa(i+1)
		write("vda/"+part+"/partition", strconv.Itoa(i+1))
		write("vda/"+part+"/uevent", "PARTNAME="+name+"\n")
	}
	out := session.NewOutbox(nil)
	out.Attach(func(m *apiv1.AgentMessage) error { r.events <- m.GetInstallEvent(); return nil })
	r.inst = &Installer{Out: out, Log: slog.New(slog.DiscardHandler), SysRoot: r.sys, DevRoot: r.dev, EFIVars: r.efi,
		Slot: layout.SlotA, MinState: 16 * mib, Busy: func() []string { return busy }}
	return r
}

// next returns the next event, or fails after a generous deadline.
func (r *rig) next(t *testing.T) *apiv1.InstallEvent {
	t.Helper()
	select {
	case e := <-r.events:
		return e
	case <-time.After(time.Minute):
		t.Fatal("no install event within a minute")
		return nil
	}
}

func TestInstallWritesDiskAndBootEntry(t *testing.T) {
	r := newRig(t)
	r.inst.Handle(&apiv1.Install{Disk: "vdb"})
	if e := r.next(t); e.GetState() != apiv1.InstallState_INSTALL_STATE_WRITING || e.GetDisk() != "vdb" {
		t.Fatalf("first event %v, want WRITING vdb", e)
	}
	e := r.next(t)
	if e.GetState() != apiv1.InstallState_INSTALL_STATE_REBOOTING || e.GetBytes() != disk.MinESP+8*mib {
		t.Fatalf("last event %v, want REBOOTING after copying the ESP and slot A", e)
	}
	select {
	case <-r.inst.Done():
	case <-time.After(time.Minute):
		t.Fatal("Done not closed after a successful install")
	}
	vars := efiboot.Vars{Dir: r.efi}
	order, err := vars.BootOrder()
	if err != nil || len(order) != 1 || order[0] != uint16(e.GetBootEntry()) {
		t.Fatalf("BootOrder = %v, %v; want the new entry %d first", order, err, e.GetBootEntry())
	}
	entry, err := vars.Entry(order[0])
	if err != nil || entry.Path != `\EFI\RIGOS\rigos-a.efi` || entry.Description != "RigOS" || entry.Partition.Number != 1 {
		t.Errorf("boot entry %+v, %v", entry, err)
	}
	if uki, err := disk.ReadUKI(filepath.Join(r.dev, "vdb")); err != nil || !bytes.Equal(uki, bytes.Repeat([]byte("U"), mib)) {
		t.Errorf("UKI on the installed disk: %d bytes, %v", len(uki), err)
	}
	// After a success the node reboots: nothing more is installed.
	r.inst.Handle(&apiv1.Install{Disk: "vdb", Wipe: true})
	if e := r.next(t); e.GetState() != apiv1.InstallState_INSTALL_STATE_FAILED || !strings.Contains(e.GetReason(), "already running") {
		t.Errorf("install after a success: %v", e)
	}
}

// Refusals come back as FAILED events naming why, and write nothing.
func TestInstallRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		disk string
		wipe bool
		busy []string
		want string
	}{
		"boot disk":    {disk: "vda", want: "booted from"},
		"no such disk": {disk: "sdz", want: "no disk sdz"},
		"path":         {disk: "../vda", want: "kernel name"},
		"workloads":    {disk: "vdb", busy: []string{"job-1"}, want: "job-1"},
		"auto":         {disk: "auto", want: "WRITING"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, tc.busy...)
			r.inst.Handle(&apiv1.Install{Disk: tc.disk, Wipe: tc.wipe})
			e := r.next(t)
			if tc.want == "WRITING" { // auto picks vdb, the one empty disk
				if e.GetState() != apiv1.InstallState_INSTALL_STATE_WRITING || e.GetDisk() != "vdb" {
					t.Errorf("auto: %v, want WRITING vdb", e)
				}
				r.next(t)
				return
			}
			if e.GetState() != apiv1.InstallState_INSTALL_STATE_FAILED || !strings.Contains(e.GetReason(), tc.want) {
				t.Errorf("event %v, want FAILED naming %q", e, tc.want)
			}
			if b, _ := os.ReadFile(filepath.Join(r.dev, "vdb")); bytes.ContainsFunc(b, func(c rune) bool { return c != 0 }) {
				t.Error("the internal disk was written")
			}
		})
	}
}

// Two requests at once: the second is refused while the first runs.
func TestInstallOneAtATime(t *testing.T) {
	r := newRig(t)
	var wg sync.WaitGroup
	wg.Add(1)
	r.inst.mu.Lock()
	r.inst.running = true // the first is running
	r.inst.mu.Unlock()
	go func() { defer wg.Done(); r.inst.Handle(&apiv1.Install{Disk: "vdb"}) }()
	wg.Wait()
	if e := r.next(t); e.GetState() != apiv1.InstallState_INSTALL_STATE_FAILED || !strings.Contains(e.GetReason(), "already running") {
		t.Errorf("second install: %v", e)
	}
}
