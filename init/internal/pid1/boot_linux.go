package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
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

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "hidepid=2"},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0755"},
	{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777"},
	{"cgroup2", layout.CgroupRoot, "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate"},
	{"efivarfs", "/sys/firmware/efi/efivars", "efivarfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, ""},
}

func mountAll(which func(mount) bool, optional func(mount) bool) error {
	for _, m := range mounts {
		if !which(m) {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil && !optional(m) {
			return fmt.Errorf("creating %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			if optional(m) {
				continue
			}
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func run() error {
	if os.Getenv("RIGOS_ROOT") == "" {
		say("moving from the initramfs to a tmpfs root")
	}
	if err := switchRoot(); err != nil {
		return fmt.Errorf("switching to a tmpfs root: %w", err)
	}
	say("RigOS init starting")
	log.SetOutput(io.Discard) // the DHCP library logs every packet; init prints its own status
	// efivarfs needs its module; it is mounted again after modules load.
	isEFI := func(m mount) bool { return m.fstype == "efivarfs" }
	if err := mountAll(func(m mount) bool { return !isEFI(m) }, isEFI); err != nil {
		return err
	}
	b, err := os.ReadFile(layout.InitConfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", layout.InitConfig, err)
	}
	cfg, err := bootconfig.Parse(b)
	if err != nil {
		return err
	}
	setClockFloor(cfg.BuildTime)

	rec, dev, err := openRecorder()
	if err != nil {
		return err
	}
	defer dev.Close()
	phase := func(p string) error {
		if _, err := rec.Record(measure.KindPhase, []byte(p)); err != nil {
			return err
		}
		say("boot phase %s measured into PCR %d", p, measure.RuntimePCR)
		return nil
	}
	if err := phase(measure.PhaseEnterInitrd); err != nil {
		return err
	}

	n, err := loadModules(cfg.Modules)
	if err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/kernel/modules_disabled", []byte("1"), 0); err != nil {
		return fmt.Errorf("disabling module loading: %w", err)
	}
	say("loaded %d of %d allowlisted modules for the hardware present; module loading disabled", n, len(cfg.Modules))
	if err := mountAll(isEFI, func(mount) bool { return false }); err != nil {
		say("%v (no EFI variables: not booted by UEFI?)", err)
	}
	applySysctls()
	// The network comes up while the partitions are opened.
	netDone := make(chan struct{})
	go func() {
		defer close(netDone)
		if err := setupNetwork(context.Background(), cfg.Network); err != nil {
			say("network: %v (the agent keeps retrying)", err)
		}
	}()
	if err := mountESP(); err != nil {
		say("%v (no ASK plan: the agent offers the whole machine)", err)
	}
	if _, err := mountSystem(); err != nil {
		return fmt.Errorf("system partition: %w", err)
	}
	if err := phase(measure.PhaseModulesLocked); err != nil {
		return err
	}
	// The state key is sealed to PCR 15 as it is now; the next phase
	// moves PCR 15 on, so nothing started later can unseal it.
	stateErr := unlockState(dev)
	if stateErr != nil {
		say("state partition unavailable: %v (no workloads on this boot)", stateErr)
	}
	if err := phase(measure.PhaseStateKeySealed); err != nil {
		return err
	}

	<-netDone
	line, ok := FormatChecks(SelfCheck(realProbe{}))
	say("selfcheck %s %s", map[bool]string{true: "passed", false: "FAILED"}[ok], line)

	if err := phase(measure.PhaseStartAgent); err != nil {
		return err
	}
	reaper := startReaper()
	if err := setupCgroups(); err != nil {
		return err
	}
	if stateErr == nil {
		if _, err := os.Stat(cfg.Containerd[0]); err == nil {
			go supervise("containerd", cfg.Containerd, serviceEnv(), RuntimeCgroup, reaper)
		} else {
			say("containerd: %v (no workloads on this boot)", err)
		}
	}
	agentEnv := serviceEnv()
	if roots := layout.InSystem(layout.CARoots); fileExists(roots) {
		// Registries are verified against the measured bundle only.
		agentEnv = append(agentEnv, "SSL_CERT_FILE="+roots, "SSL_CERT_DIR=/nonexistent")
	}
	supervise("agent", cfg.Agent, agentEnv, AgentCgroup, reaper)
	return nil
}

// serviceEnv is the environment of the services init starts.
func serviceEnv() []string {
	return []string{"PATH=" + layout.SystemPath, "HOME=" + layout.RunDir}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// The agent and containerd run in cgroups of their own. The agent's CPU
// weight is ten times the default every workload's cgroup gets: it must
// answer challenges within their deadline however busy workloads keep
// the CPUs.
const (
	AgentCgroup     = layout.CgroupRoot + "/rigos.agent"
	RuntimeCgroup   = layout.CgroupRoot + "/rigos.runtime"
	AgentCPUWeight  = "1000"
	cgroupControls  = "+cpu +memory +pids"
	subtreeControls = layout.CgroupRoot + "/cgroup.subtree_control"
)

func setupCgroups() error {
	if err := os.WriteFile(subtreeControls, []byte(cgroupControls), 0); err != nil {
		return fmt.Errorf("enabling cgroup controllers: %w", err)
	}
	for _, d := range []string{AgentCgroup, RuntimeCgroup} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
	}
	if err := os.WriteFile(AgentCgroup+"/cpu.weight", []byte(AgentCPUWeight), 0); err != nil {
		return fmt.Errorf("agent CPU weight: %w", err)
	}
	return nil
}

// setClockFloor makes sure the clock is not before the image was built,
// so certificate checks work on a machine with a flat RTC battery.
func setClockFloor(build int64) {
	if build == 0 || time.Now().Unix() >= build {
		return
	}
	tv := unix.NsecToTimeval(time.Unix(build, 0).UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		say("clock: %v", err)
		return
	}
	say("clock was before the build time; set to %s", time.Unix(build, 0).UTC().Format(time.RFC3339))
}

func openRecorder() (*measure.Recorder, tpm.Device, error) {
	dev, err := tpm.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("opening TPM: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(layout.RuntimeLog), 0o755); err != nil {
		dev.Close()
		return nil, nil, err
	}
	var mu sync.Mutex
	rec, err := measure.NewRecorder(layout.RuntimeLog, func(pcr int, d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return tpm.Extend(dev, pcr, d)
	})
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	// The agent opens the TPM itself; init keeps it for its phases and
	// the state key.
	return rec, dev, nil
}

// loadModules loads the allowlisted modules the hardware present needs,
// rescanning the devices after each round because drivers create devices
// (virtio_pci creates the virtio devices, for instance).
func loadModules(mods []bootconfig.Module) (int, error) {
	loaded := map[string]bool{}
	for round := 0; round < 5; round++ {
		plan := modulePlan(mods, deviceAliases(), loaded)
		if len(plan) == 0 {
			break
		}
		for _, m := range plan {
			full := filepath.Join(layout.ModulesDir, m.Path)
			f, err := os.Open(full)
			if err != nil {
				return len(loaded), fmt.Errorf("opening module %s: %w", m.Path, err)
			}
			start := time.Now()
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			if d := time.Since(start); d > 100*time.Millisecond {
				say("module %s took %s", m.Name, d.Round(time.Millisecond))
			}
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return len(loaded), fmt.Errorf("loading module %s: %w", m.Name, err)
			}
			loaded[m.Name] = true
		}
	}
	return len(loaded), nil
}

// deviceAliases reads the modalias of every device on every bus.
func deviceAliases() []string {
	files, _ := filepath.Glob("/sys/bus/*/devices/*/modalias")
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}

func applySysctls() {
	for _, s := range Sysctls {
		p := "/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")
		if err := os.WriteFile(p, []byte(s.Value), 0); err != nil {
			say("sysctl %s=%s: %v", s.Key, s.Value, err)
		}
	}
}

func setupNetwork(ctx context.Context, n bootconfig.Network) error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	link, err := pickLink(n)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing up %s: %w", link.Attrs().Name, err)
	}
	if n.Mode == "static" {
		addr, err := netlink.ParseAddr(n.Address)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s: %w", n.Address, err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(n.Gateway)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding default route via %s: %w", n.Gateway, err)
		}
		writeResolvConf(n.DNS)
		say("network %s %s via %s", link.Attrs().Name, n.Address, n.Gateway)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.Timeout.D())
	defer cancel()
	for r := range dhclient.SendRequests(ctx, []netlink.Link{link}, true, false, dhclient.Config{Timeout: 5 * time.Second, Retries: 5}, n.Timeout.D()) {
		if r.Err != nil {
			return fmt.Errorf("DHCP on %s: %w", link.Attrs().Name, r.Err)
		}
		if err := r.Lease.Configure(); err != nil {
			return fmt.Errorf("applying DHCP lease: %w", err)
		}
		say("network %s %s (DHCP)", link.Attrs().Name, r.Lease)
		return nil
	}
	return errors.New("no DHCP answer")
}

func writeResolvConf(dns []string) {
	var b strings.Builder
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	_ = os.MkdirAll(filepath.Dir(layout.ResolvConf), 0o755)
	_ = os.WriteFile(layout.ResolvConf, []byte(b.String()), 0o644)
}

// pickLink returns the configured interface or the first non-loopback
// one with carrier, waiting up to the timeout for a link.
func pickLink(n bootconfig.Network) (netlink.Link, error) {
	if n.Interface != "" {
		return netlink.LinkByName(n.Interface)
	}
	deadline := time.Now().Add(n.Timeout.D())
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		var first netlink.Link
		for _, l := range links {
			if l.Type() != "device" || l.Attrs().Flags&net.FlagLoopback != 0 {
				continue
			}
			if first == nil {
				first = l
			}
			_ = netlink.LinkSetUp(l)
			if l.Attrs().OperState == netlink.OperUp {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			if first != nil {
				return first, nil
			}
			return nil, errors.New("no network interface")
		}
		time.Sleep(200 * time.Millisecond) // waiting for link, bounded by the timeout
	}
}

// reaper collects every child that exits (orphans are reparented to PID
// 1) and reports the exits of processes it was asked to watch.
type reaper struct {
	mu      sync.Mutex
	watched map[int]chan unix.WaitStatus
}

func startReaper() *reaper {
	r := &reaper{watched: map[int]chan unix.WaitStatus{}}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, unix.SIGCHLD)
	go func() {
		for range sig {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err != nil || pid <= 0 {
					break
				}
				r.mu.Lock()
				ch, ok := r.watched[pid]
				delete(r.watched, pid)
				r.mu.Unlock()
				if ok {
					ch <- ws
				}
			}
		}
	}()
	return r
}

// start starts argv and returns a channel that receives its exit status.
func (r *reaper) start(argv, env []string, cgroup string) (int, chan unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	attr := &syscall.SysProcAttr{}
	if cgroup != "" {
		// Started inside its cgroup (clone3), so no thread ever runs
		// outside it.
		fd, err := unix.Open(cgroup, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, nil, fmt.Errorf("opening cgroup %s: %w", cgroup, err)
		}
		defer unix.Close(fd)
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}
	r.mu.Lock()
	defer r.mu.Unlock() // held so the reaper cannot see the exit before it is watched
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{nil, os.Stdout, os.Stderr},
		Sys:   attr,
	})
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	r.watched[pid] = ch
	_ = p.Release()
	return pid, ch, nil
}

// supervise runs a service forever in cgroup (a folder under
// /sys/fs/cgroup; empty: init's own), restarting it with backoff.
func supervise(name string, argv, env []string, cgroup string, r *reaper) {
	b := newBackoff()
	for {
		started := time.Now()
		pid, done, err := r.start(argv, env, cgroup)
		if err != nil {
			say("starting %s: %v", name, err)
		} else {
			say("%s started (pid %d)", name, pid)
			ws := <-done
			say("%s exited (%s)", name, describe(ws))
		}
		if time.Since(started) > time.Minute {
			b.reset()
		}
		d := b.next()
		say("restarting %s in %s", name, d)
		time.Sleep(d)
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
