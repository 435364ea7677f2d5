// Package installer carries out the verifier's install and update
// requests on a node. An install copies the disk RigOS booted from onto
// an internal disk (pkg/install) and puts a boot entry for it first in
// the firmware's boot order (pkg/efiboot). An update writes a new build
// into the slot the node did not boot from (pkg/update) and sets that
// slot's boot entry in BootNext, so the firmware boots it once; the boot
// after that is the old slot again unless the new one is committed. In
// both cases, once the verifier has the result, the agent ends so init
// reboots.
package installer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/install"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
)

// Installer handles apiv1.Install and apiv1.Update messages, one at a
// time.
type Installer struct {
	// Out carries its events to the verifier.
	Out *session.Outbox
	Log *slog.Logger
	// SysRoot is sysfs (default "/sys"), EFIVars the efivarfs folder
	// (default layout.EFIVarsDir), DevRoot where disks' nodes are
	// (default "/dev").
	SysRoot, EFIVars, DevRoot string
	// Slot is the slot RigOS booted from.
	Slot layout.Slot
	// Busy returns the workloads running; an install waits for none.
	Busy func() []string
	// Hold, if set, stops new workloads while the install runs (and,
	// after a success, until the reboot); it fails when some run.
	Hold func(why string) (release func(), ok bool)
	// MinState is passed to install.Options (0: its default).
	MinState int64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ESP, set in tests, is a folder standing in for the mounted ESP
	// (default: layout.ESPMount, remounted writable for an update).
	ESP string
	// HandOver, if set, seals the state's passphrase for the build whose
	// UKI an update wrote, before that build is set to boot; an error
	// (ErrNoState included) fails the update.
	HandOver func(uki io.ReaderAt, build string) error
	// Committed, if set, runs once a trial boot committed (Commit): it
	// drops the other builds' state keys.
	Committed func() error
	// CanCommit, if set, says why a trial boot must not be committed
	// (this build did not open the state), or "".
	CanCommit func() string
	// Poll is how often an update waiting for workloads to end looks
	// again (default 2 s).
	Poll time.Duration
	// Client fetches updates whose Update names a URL (HTTPSClient);
	// nil: such updates fail.
	Client *http.Client

	mu         sync.Mutex
	running    bool // an install or update
	upd        *updating
	done       chan struct{}
	once       sync.Once
	rebootOnce sync.Once
	commitOnce sync.Once
}

// reboot closes Done, once.
func (i *Installer) reboot() {
	i.Done()
	i.rebootOnce.Do(func() { close(i.done) })
}

// Done is closed once an install has succeeded and its last event was
// handed to the outbox: the session should end (session.Node.End) and
// the agent exit for the reboot.
func (i *Installer) Done() <-chan struct{} {
	i.once.Do(func() { i.done = make(chan struct{}) })
	return i.done
}

func (i *Installer) event(req *apiv1.Install, e *apiv1.InstallEvent) {
	e.RequestId = req.GetRequestId()
	now := time.Now
	if i.Now != nil {
		now = i.Now
	}
	e.UnixMs = now().UnixMilli()
	i.Out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_InstallEvent{InstallEvent: e}})
}

func (i *Installer) fail(req *apiv1.Install, disk string, err error) {
	i.Log.Error("install failed", "disk", disk, "err", err)
	i.event(req, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_FAILED, Disk: disk, Reason: err.Error()})
}

// Handle starts the install m asks for, unless one is running; it
// answers through Out.
func (i *Installer) Handle(m *apiv1.Install) {
	i.Done()
	i.mu.Lock()
	if i.running {
		i.mu.Unlock()
		i.fail(m, m.GetDisk(), errors.New("an install is already running on this node"))
		return
	}
	i.running = true
	i.mu.Unlock()
	go func() {
		ok := i.run(m)
		i.mu.Lock()
		i.running = ok // after a success nothing more is installed: the node reboots
		i.mu.Unlock()
		if ok {
			i.reboot()
		}
	}()
}

// run installs and reports; it returns whether the node should reboot.
func (i *Installer) run(m *apiv1.Install) (rebooting bool) {
	sysRoot, devRoot, efiVars := or(i.SysRoot, "/sys"), or(i.DevRoot, "/dev"), or(i.EFIVars, layout.EFIVarsDir)
	if i.Hold != nil {
		release, ok := i.Hold("an install is running on this node; it reboots when the install ends")
		if ok {
			defer func() {
				if !rebooting {
					release()
				}
			}()
		}
	}
	if i.Busy != nil {
		if busy := i.Busy(); len(busy) > 0 {
			i.fail(m, m.GetDisk(), fmt.Errorf("workloads %s are running: stop them first (the install ends in a reboot)", strings.Join(busy, ", ")))
			return false
		}
	}
	if _, err := apiv1.CheckInstall(m.GetDisk(), m.GetWipe()); err != nil {
		i.fail(m, m.GetDisk(), err)
		return false
	}
	disks, err := blockdev.ListDisks(sysRoot)
	if err != nil {
		i.fail(m, m.GetDisk(), fmt.Errorf("listing disks: %w", err))
		return false
	}
	boot, err := bootDisk(devRoot, efiVars, disks)
	if err != nil {
		i.fail(m, m.GetDisk(), err)
		return false
	}
	target, err := install.Target(disks, boot, m.GetDisk())
	if err != nil {
		i.fail(m, m.GetDisk(), err)
		return false
	}
	i.Log.Info("installing", "from", boot.Name, "to", target.Name, "wipe", m.GetWipe(), "slot", i.Slot)
	i.event(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_WRITING, Disk: target.Name})
	res, err := install.Install(install.Options{
		Source: devRoot + "/" + boot.Name, Target: devRoot + "/" + target.Name, Slot: i.Slot, Wipe: m.GetWipe(), MinState: i.MinState,
	})
	if err != nil {
		i.fail(m, target.Name, err)
		return false
	}
	var entry uint16
	addEntry := func() (err error) {
		entry, err = efiboot.Vars{Dir: efiVars}.AddFirst(efiboot.LoadOption{
			Attributes: efiboot.LoadOptionActive, Description: "RigOS", Partition: res.ESP,
			Path: `\` + strings.ReplaceAll(layout.SlotUKI(i.Slot), "/", `\`),
		})
		return err
	}
	if i.EFIVars == "" { // the system's efivarfs, mounted read-only
		err = efiboot.Writable(efiVars, addEntry)
	} else {
		err = addEntry()
	}
	if err != nil {
		i.fail(m, target.Name, fmt.Errorf("the disk is written, but its boot entry is not: %w (the firmware may still boot it from its removable-media path)", err))
		return false
	}
	i.Log.Info("installed", "disk", target.Name, "bytes", res.Bytes, "write", res.Write, "verify", res.Verify, "boot_entry", fmt.Sprintf("Boot%04X", entry))
	if i.Busy != nil {
		if busy := i.Busy(); len(busy) > 0 { // cannot happen while held; said, not hidden
			i.Log.Warn("workloads started during the install are killed by the reboot", "workloads", busy)
		}
	}
	i.event(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_REBOOTING, Disk: target.Name, Bytes: res.Bytes, TotalBytes: res.Bytes,
		WriteMs: res.Write.Milliseconds(), VerifyMs: res.Verify.Milliseconds(), BootEntry: uint32(entry)})
	return true
}

// bootDisk is the disk the firmware booted from: the one holding the
// partition systemd-stub named in LoaderDevicePartUUID or, without that
// variable, the one disk holding RigOS.
func bootDisk(devRoot, efiVars string, disks []blockdev.Disk) (blockdev.Disk, error) {
	if id, err := efiboot.LoaderDevicePartUUID(efiVars); err == nil {
		return blockdev.DiskWithPartition(devRoot, disks, id)
	}
	return blockdev.BootDisk(disks)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
