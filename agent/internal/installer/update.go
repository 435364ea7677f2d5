package installer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/install"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/update"
)

// updating is an update being received.
type updating struct {
	req   *apiv1.Update
	slot  layout.Slot
	w     *update.Writer
	esp   efiboot.Partition
	close func() error // makes the ESP read-only again
	last  time.Time    // of the last progress event
}

// otherSlot is the slot the node did not boot from.
func otherSlot(s layout.Slot) layout.Slot {
	if s == layout.SlotA {
		return layout.SlotB
	}
	return layout.SlotA
}

func (i *Installer) updateEvent(req *apiv1.Update, e *apiv1.UpdateEvent) {
	e.RequestId, e.Build = req.GetRequestId(), req.GetBuild()
	now := time.Now
	if i.Now != nil {
		now = i.Now
	}
	e.UnixMs = now().UnixMilli()
	i.Out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: e}})
}

func (i *Installer) updateFailed(req *apiv1.Update, slot layout.Slot, err error) {
	i.Log.Error("update failed", "build", req.GetBuild(), "slot", slot, "err", err)
	i.updateEvent(req, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_FAILED, Slot: string(slot), Reason: err.Error()})
}

// HandleUpdate starts the update m asks for, unless an install or
// update is running: it opens the slot the node did not boot from and
// answers RECEIVING, naming it; the files then arrive through
// HandleUpdateChunk.
func (i *Installer) HandleUpdate(m *apiv1.Update) {
	i.Done()
	slot := otherSlot(i.Slot)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.running {
		i.updateFailed(m, slot, errors.New("an install or update is already running on this node"))
		return
	}
	// On a trial boot the other slot is the one to fall back to: it is
	// not overwritten until this one is committed.
	if t, err := bootslot.Detect(or(i.EFIVars, layout.EFIVarsDir), i.Slot); err != nil || t != nil {
		why := fmt.Errorf("this boot is an uncommitted trial of slot %s; slot %s is its fallback: update once it is committed", i.Slot, slot)
		if err != nil {
			why = fmt.Errorf("reading the boot variables: %w", err)
		}
		i.updateFailed(m, slot, why)
		return
	}
	u, err := i.startUpdate(m, slot)
	if err != nil {
		i.updateFailed(m, slot, err)
		return
	}
	i.running, i.upd = true, u
	done, total := u.w.Received()
	i.Log.Info("receiving an update", "build", m.GetBuild(), "slot", slot, "bytes", total)
	i.updateEvent(m, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_RECEIVING, Slot: string(slot), Bytes: done, TotalBytes: total})
	if m.GetUrl() != "" {
		go i.fetch(u)
	}
}

func (i *Installer) startUpdate(m *apiv1.Update, slot layout.Slot) (*updating, error) {
	sysRoot, devRoot, efiVars := or(i.SysRoot, "/sys"), or(i.DevRoot, "/dev"), or(i.EFIVars, layout.EFIVarsDir)
	spec := update.Spec{SystemSize: m.GetSystemSize(), SystemSHA256: m.GetSystemSha256(), UKISize: m.GetUkiASize(), UKISHA256: m.GetUkiASha256()}
	if slot == layout.SlotB {
		spec.UKISize, spec.UKISHA256 = m.GetUkiBSize(), m.GetUkiBSha256()
	}
	disks, err := blockdev.ListDisks(sysRoot)
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	boot, err := bootDisk(devRoot, efiVars, disks)
	if err != nil {
		return nil, err
	}
	parts, err := install.Partitions(filepath.Join(devRoot, boot.Name))
	if err != nil {
		return nil, fmt.Errorf("the boot disk: %w", err)
	}
	sys := parts[layout.SystemPartition(slot)]
	esp, closeESP, err := i.writableESP()
	if err != nil {
		return nil, err
	}
	w, err := update.Start(update.Options{
		Slot: slot, SystemPartition: filepath.Join(devRoot, boot.PartitionName(int(sys.Number))), ESP: esp, Spec: spec,
	})
	if err != nil {
		return nil, errors.Join(err, closeESP())
	}
	return &updating{req: m, slot: slot, w: w, esp: parts[layout.ESPPartition], close: closeESP, last: time.Now()}, nil
}

// writableESP returns the mounted ESP's folder, writable until the
// returned function runs. ESP, set in tests, is a plain folder.
func (i *Installer) writableESP() (string, func() error, error) {
	if i.ESP != "" {
		return i.ESP, func() error { return nil }, nil
	}
	if err := remountESP(layout.ESPMount, false); err != nil {
		return "", nil, fmt.Errorf("making the ESP writable: %w", err)
	}
	return layout.ESPMount, func() error {
		if err := remountESP(layout.ESPMount, true); err != nil {
			return fmt.Errorf("making the ESP read-only again: %w", err)
		}
		return nil
	}, nil
}

// HandleUpdateChunk writes the next part of the running update; the
// last one finishes it in the background (reading back takes a while,
// and the session must go on answering challenges).
func (i *Installer) HandleUpdateChunk(c *apiv1.UpdateChunk) {
	i.mu.Lock()
	u := i.upd
	if u == nil || u.req.GetRequestId() != c.GetRequestId() {
		i.mu.Unlock()
		i.Log.Warn("update data for no running update: dropped", "request", c.GetRequestId())
		return
	}
	complete, err := u.w.Write(update.Part(c.GetPart()), c.GetOffset(), c.GetData())
	if err != nil {
		i.endUpdate(u)
		i.mu.Unlock()
		i.updateFailed(u.req, u.slot, fmt.Errorf("%w; the node still boots the slot it runs", err))
		return
	}
	if !complete {
		if time.Since(u.last) >= 5*time.Second {
			u.last = time.Now()
			done, total := u.w.Received()
			i.updateEvent(u.req, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_RECEIVING, Slot: string(u.slot), Bytes: done, TotalBytes: total})
		}
		i.mu.Unlock()
		return
	}
	i.upd = nil // no more chunks; running stays set
	i.mu.Unlock()
	go func() {
		if i.finishUpdate(u) {
			i.reboot()
			return
		}
		i.mu.Lock()
		i.running = false
		i.mu.Unlock()
	}()
}

// endUpdate drops a failed update; i.mu is held.
func (i *Installer) endUpdate(u *updating) {
	if err := errors.Join(u.w.Close(), u.close()); err != nil {
		i.Log.Error("closing the failed update", "err", err)
	}
	i.upd, i.running = nil, false
}

// finishUpdate makes the written slot boot once and waits, unless
// forced, for no workload to run; it returns whether the node should
// reboot.
func (i *Installer) finishUpdate(u *updating) bool {
	res, err := u.w.Finish()
	err = errors.Join(err, u.w.Close(), u.close())
	if err != nil {
		i.updateFailed(u.req, u.slot, fmt.Errorf("%w; the node still boots the slot it runs", err))
		return false
	}
	if i.HandOver != nil {
		if err := i.handOver(u); err != nil {
			i.updateFailed(u.req, u.slot, fmt.Errorf("slot %s is written, but the state could not be handed over to it: %w; the node still boots the slot it runs", u.slot, err))
			return false
		}
	}
	efiVars := or(i.EFIVars, layout.EFIVarsDir)
	var entry uint16
	setNext := func() error {
		v := efiboot.Vars{Dir: efiVars}
		var err error
		if entry, err = v.Add(efiboot.LoadOption{
			Attributes: efiboot.LoadOptionActive, Description: "RigOS " + strings.ToUpper(string(u.slot)), Partition: u.esp,
			Path: `\` + strings.ReplaceAll(layout.SlotUKI(u.slot), "/", `\`),
		}); err != nil {
			return err
		}
		return v.SetBootNext(entry)
	}
	if i.EFIVars == "" {
		err = efiboot.Writable(efiVars, setNext)
	} else {
		err = setNext()
	}
	if err != nil {
		i.updateFailed(u.req, u.slot, fmt.Errorf("slot %s is written, but could not be set to boot next: %w", u.slot, err))
		return false
	}
	i.Log.Info("update written", "build", u.req.GetBuild(), "slot", u.slot, "bytes", res.Bytes, "write", res.Write, "verify", res.Verify,
		"boot_next", fmt.Sprintf("Boot%04X", entry))
	ev := func(st apiv1.UpdateState) *apiv1.UpdateEvent {
		return &apiv1.UpdateEvent{State: st, Slot: string(u.slot), Bytes: res.Bytes, TotalBytes: res.Bytes,
			WriteMs: res.Write.Milliseconds(), VerifyMs: res.Verify.Milliseconds(), BootEntry: uint32(entry)}
	}
	if i.Hold != nil {
		waiting := false
		for {
			why := "the node reboots into an update"
			if _, ok := i.Hold(why); ok || u.req.GetForce() {
				break // held until the reboot
			}
			if !waiting {
				waiting = true
				i.updateEvent(u.req, ev(apiv1.UpdateState_UPDATE_STATE_WAITING))
				i.Log.Info("update waits for the workloads to end")
			}
			time.Sleep(i.waitPoll())
		}
	}
	i.updateEvent(u.req, ev(apiv1.UpdateState_UPDATE_STATE_REBOOTING))
	return true
}

// handOver passes the written slot's UKI to HandOver.
func (i *Installer) handOver(u *updating) error {
	esp := or(i.ESP, layout.ESPMount)
	f, err := os.Open(filepath.Join(esp, layout.SlotUKI(u.slot)))
	if err != nil {
		return err
	}
	defer f.Close()
	return i.HandOver(f, u.req.GetBuild())
}

// ErrNoState, from HandOver, means this boot has no state it can hand
// over: none opened, or one made before updates (its passphrase is not
// derived from its key). The update fails: the new build would run
// without the customers' data.
var ErrNoState = errors.New("this boot has no state it can hand over (none opened, or one made before updates)")

func (i *Installer) waitPoll() time.Duration {
	if i.Poll > 0 {
		return i.Poll
	}
	return 2 * time.Second
}
