package pid1

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/rigos/rigos/pkg/layout"
)

// Check is one hostile-owner check run inside the booted image.
type Check struct {
	Name string
	OK   bool
	Got  string
}

// Probe is the file system view a self-check runs against; the real one
// is the booted system (see realProbe).
type Probe interface {
	ReadFile(path string) ([]byte, error)
	// Opens reports whether path can be opened for reading.
	Opens(path string) bool
	// MountDebugfs tries to mount debugfs and reports success.
	MountDebugfs() bool
	// Executables lists regular files with an execute bit, outside the
	// kernel's virtual file systems.
	Executables() ([]string, error)
}

// workloadRoot holds containerd's content and snapshots, on the
// encrypted state partition, relative to the root: the files of workload
// images there are executable only inside containers, so the check for
// executables does not look there.
var workloadRoot = strings.TrimPrefix(layout.ContainerdRoot, "/")

// SelfCheck runs the checks that show the owner has no way in. extra
// are executables the image carries beyond layout.Executables (the GPU
// driver's nvidia-smi, which runs only inside containers).
func SelfCheck(p Probe, extra ...string) []Check {
	read := func(path string) string {
		b, err := p.ReadFile(path)
		if err != nil {
			return "unreadable"
		}
		return strings.TrimSpace(string(b))
	}
	var out []Check
	add := func(name string, ok bool, got string) { out = append(out, Check{name, ok, got}) }
	lock := read("/sys/kernel/security/lockdown")
	add("lockdown", strings.Contains(lock, "[confidentiality]"), lock)
	md := read("/proc/sys/kernel/modules_disabled")
	add("modules_disabled", md == "1", md)
	sysrq := read("/proc/sys/kernel/sysrq")
	add("sysrq", sysrq == "0", sysrq)
	for _, dev := range []string{"/dev/mem", "/dev/port", "/proc/kcore"} {
		opens := p.Opens(dev)
		add("no "+dev, !opens, map[bool]string{true: "readable", false: "denied"}[opens])
	}
	dbg := p.MountDebugfs()
	add("debugfs", !dbg, map[bool]string{true: "mountable", false: "absent"}[dbg])
	exes, err := p.Executables()
	got := strings.Join(exes, ",")
	if err != nil {
		got = err.Error()
	}
	// The allowed executables are layout.Executables (init, the agent,
	// and containerd, its shim and runc, which run workloads) and extra.
	allowed := append(layout.Executables(), extra...)
	sort.Strings(allowed)
	add("executables", err == nil && strings.Join(allowed, ",") == got, got)
	for _, sh := range []string{"/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/sh", "/sbin/getty"} {
		if _, err := p.ReadFile(sh); err == nil {
			add("no shell", false, sh)
			return out
		}
	}
	add("no shell", true, "none")
	return out
}

// FormatChecks renders checks as one console line.
func FormatChecks(cs []Check) (string, bool) {
	ok := true
	var parts []string
	for _, c := range cs {
		mark := "ok"
		if !c.OK {
			mark, ok = "FAIL", false
		}
		parts = append(parts, fmt.Sprintf("%s=%s(%s)", strings.ReplaceAll(c.Name, " ", "_"), mark, c.Got))
	}
	return strings.Join(parts, " "), ok
}

type realProbe struct{}

func (realProbe) ReadFile(p string) ([]byte, error) { return os.ReadFile(p) }

func (realProbe) Opens(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	buf := make([]byte, 1)
	_, err = f.Read(buf)
	f.Close()
	return err == nil
}

func (realProbe) Executables() ([]string, error) {
	var out []string
	err := fs.WalkDir(os.DirFS("/"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == "proc" || p == "sys" || p == "dev" || p == "run" || p == "tmp" || p == workloadRoot) {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil && info.Mode()&0o111 != 0 {
				out = append(out, "/"+p)
			}
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}
