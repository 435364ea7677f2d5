package pid1

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/measure"
)

// say prints a status line on the console. Lines start with "rigos: " so
// that tests and operators can follow the boot, and end with the time
// since the kernel started.
func say(format string, args ...any) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	fmt.Fprintf(os.Stdout, "rigos: "+format+" [%.2fs]\n", append(args, float64(ts.Nano())/1e9)...)
}

// Main runs init. It never returns: on an unrecoverable error or a panic
// it syncs the disks and reboots.
func Main() {
	defer func() {
		if r := recover(); r != nil {
			say("panic: %v", r)
		}
		rebootNow()
	}()
	if err := run(); err != nil {
		say("fatal: %v", err)
	}
}

func rebootNow() {
	say("rebooting in 5s")
	unix.Sync()
	time.Sleep(5 * time.Second)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour) // a bare select{} would trip the deadlock detector
	}
}

// bootSteps is the boot sequence. A step's error stops the boot (init
// reboots); a step that can do without what it sets up says so and
// returns nil.
var bootSteps = []step{
	{name: "tmpfs root", fn: (*boot).tmpfsRoot},
	// efivarfs needs its module; it is mounted after modules load.
	{name: "kernel file systems", fn: func(*boot) error { return mountAll(notEFI, isEFI) }},
	{name: "configuration", fn: (*boot).readConfig},
	{name: "TPM", fn: (*boot).openTPM, phase: measure.PhaseEnterInitrd},
	{name: "kernel modules", fn: (*boot).loadModules},
	{name: "EFI variables", fn: (*boot).mountEFIVars},
	// A firmware in Setup Mode gets RigOS's keys, then the rig reboots
	// into Secure Boot.
	{name: "Secure Boot keys", fn: (*boot).secureBootKeys},
	// A trial boot of an update is watched from here: the hardware
	// watchdog, and a deadline to be trusted and committed.
	{name: "update trial", fn: (*boot).watchTrial},
	// The partitions below are opened on the disk the firmware booted.
	{name: "boot disk", fn: (*boot).findBootDisk},
	{name: "sysctls", fn: func(*boot) error { applySysctls(); return nil }},
	// The network comes up while the partitions are opened.
	{name: "network", fn: (*boot).startNetwork},
	{name: "EFI system partition", fn: (*boot).mountESP},
	{name: "system partition", fn: (*boot).mountSystem},
	// The NVIDIA driver lives on the verified system partition; module
	// loading is locked once it is in (or not needed).
	{name: "GPU driver", fn: (*boot).loadGPUDriver, phase: measure.PhaseModulesLocked},
	// The state key is sealed to PCR 15 as it is at modules-locked; the
	// phase after the step moves PCR 15 on, so nothing started later can
	// unseal it.
	{name: "state partition", fn: (*boot).unlockState, phase: measure.PhaseStateKeySealed},
	{name: "self-check", fn: (*boot).selfCheck, phase: measure.PhaseStartAgent},
	{name: "services", fn: (*boot).startServices},
}

func run() error {
	b := &boot{sys: newSysfs(sysRoot)}
	defer b.close()
	return runSteps(b, bootSteps, b.measure)
}

func (b *boot) close() {
	if b.dev != nil {
		b.dev.Close()
	}
}

// measure records the boot phase p in the runtime log and PCR 15.
func (b *boot) measure(p string) error {
	if _, err := b.rec.Record(measure.KindPhase, []byte(p)); err != nil {
		return err
	}
	say("boot phase %s measured into PCR %d", p, measure.RuntimePCR)
	return nil
}

// tmpfsRoot moves init onto a tmpfs root (switchRoot execs init again
// there).
func (b *boot) tmpfsRoot() error {
	if os.Getenv("RIGOS_ROOT") == "" {
		say("moving from the initramfs to a tmpfs root")
	}
	if err := switchRoot(); err != nil {
		return fmt.Errorf("switching to a tmpfs root: %w", err)
	}
	say("RigOS init starting")
	log.SetOutput(io.Discard) // the DHCP library logs every packet; init prints its own status
	return nil
}

func (b *boot) readConfig() error {
	raw, err := os.ReadFile(layout.InitConfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", layout.InitConfig, err)
	}
	if b.cfg, err = bootconfig.Parse(raw); err != nil {
		return err
	}
	setClockFloor(b.cfg.BuildTime)
	return nil
}

func (b *boot) openTPM() error {
	var err error
	b.rec, b.dev, err = openRecorder()
	return err
}

// loadModules loads the initramfs's modules the hardware needs. Module
// loading stays open for the GPU driver (loadGPUDriver).
func (b *boot) loadModules() error {
	loaded, err := loadModules(b.sys, layout.ModulesDir, b.cfg.Modules)
	if err != nil {
		return err
	}
	say("loaded %d of %d allowlisted modules for the hardware present", len(loaded), len(b.cfg.Modules))
	return nil
}

// loadGPUDriver loads the NVIDIA driver from the system partition when
// an NVIDIA GPU is present, creates its device nodes, then disables
// module loading for good. A driver that does not load is said, not
// fatal: the node comes up offering no GPUs.
func (b *boot) loadGPUDriver() error {
	if g := b.cfg.GPU; g != nil {
		b.gpu = loadGPU(b.sys, g)
		say("%s", b.gpu.summary(g))
	}
	if err := os.WriteFile("/proc/sys/kernel/modules_disabled", []byte("1"), 0); err != nil {
		return fmt.Errorf("disabling module loading: %w", err)
	}
	say("module loading disabled")
	return nil
}

func (b *boot) mountEFIVars() error {
	if err := mountAll(isEFI, func(mount) bool { return false }); err != nil {
		say("%v (no EFI variables: not booted by UEFI?)", err)
	}
	return nil
}

// secureBootKeys enrols RigOS's Secure Boot keys when the firmware is in
// Setup Mode and reboots into Secure Boot; with Secure Boot off and no
// Setup Mode it says what the supplier must do (the verifier says it
// too, and never trusts the rig). Failing to enrol is said, not fatal:
// the boot goes on, untrusted, rather than loop.
func (b *boot) secureBootKeys() error {
	st, err := readSBState(EFIVarsDir)
	switch {
	case err != nil:
		say("Secure Boot state: %v", err)
		return nil
	case st.secureBoot:
		return nil
	case !st.setupMode:
		say("%s", SecureBootOffHelp)
		return nil
	}
	say("firmware in Setup Mode: enrolling RigOS's Secure Boot keys (db, KEK, PK)")
	if err := unix.Mount("efivarfs", EFIVarsDir, "efivarfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		say("making EFI variables writable: %v; not enrolled", err)
		return nil
	}
	err = enrolKeys(EFIVarsDir, "/", efiboot.ClearImmutable)
	_ = unix.Mount("efivarfs", EFIVarsDir, "efivarfs", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil {
		say("enrolling Secure Boot keys: %v; this rig stays untrusted", err)
		return nil
	}
	say("enrolled RigOS's Secure Boot keys; the firmware has left Setup Mode: rebooting into Secure Boot")
	rebootNow()
	return nil
}

// startNetwork brings the network up in the background; selfCheck waits
// for it.
func (b *boot) startNetwork() error {
	b.netDone = make(chan struct{})
	go func() {
		defer close(b.netDone)
		if err := setupNetwork(context.Background(), b.cfg.Network); err != nil {
			say("network: %v (the agent keeps retrying)", err)
		}
	}()
	return nil
}

func (b *boot) mountESP() error {
	if err := mountESP(b.sys); err != nil {
		say("%v (no ASK plan: the agent offers the whole machine)", err)
	}
	return nil
}

func (b *boot) mountSystem() error {
	if _, err := mountSystem(b.sys); err != nil {
		return fmt.Errorf("system partition: %w", err)
	}
	return nil
}

func (b *boot) unlockState() error {
	record := func(kind string, data []byte) error { _, err := b.rec.Record(kind, data); return err }
	if b.stateErr = unlockState(b.sys, b.dev, record, !b.trial); b.stateErr != nil {
		say("state partition unavailable: %v (no workloads on this boot)", b.stateErr)
	}
	return nil
}

// selfCheck waits for the network, then runs the self-check.
func (b *boot) selfCheck() error {
	<-b.netDone
	var extra []string
	if g := b.cfg.GPU; g != nil {
		extra = g.Executables
	}
	checks := SelfCheck(realProbe{}, extra...)
	if g := b.cfg.GPU; g != nil {
		checks = append(checks, GPUModulesCheck(g, b.gpu, os.ReadFile))
	}
	line, ok := FormatChecks(checks)
	say("selfcheck %s %s", map[bool]string{true: "passed", false: "FAILED"}[ok], line)
	return nil
}

// startServices starts containerd (when the state partition is there)
// and the agent, and supervises the agent for ever.
func (b *boot) startServices() error {
	reaper := startReaper()
	if err := setupCgroups(); err != nil {
		return err
	}
	if b.stateErr == nil {
		if _, err := os.Stat(b.cfg.Containerd[0]); err == nil {
			go supervise("containerd", b.cfg.Containerd, serviceEnv(), RuntimeCgroup, reaper, 0)
		} else {
			say("containerd: %v (no workloads on this boot)", err)
		}
	}
	agentEnv := serviceEnv()
	if roots := layout.InSystem(layout.CARoots); fileExists(roots) {
		// Registries are verified against the measured bundle only.
		agentEnv = append(agentEnv, "SSL_CERT_FILE="+roots, "SSL_CERT_DIR=/nonexistent")
	}
	supervise("agent", b.cfg.Agent, agentEnv, AgentCgroup, reaper, layout.ExitReboot)
	say("the agent asked for a reboot (an install finished)")
	return nil
}
