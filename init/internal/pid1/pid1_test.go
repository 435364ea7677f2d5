package pid1

import (
	"errors"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/layout"
)

type fakeProbe struct {
	files    map[string]string
	readable map[string]bool
	debugfs  bool
	exes     []string
}

var _ Probe = (*fakeProbe)(nil)

func (f *fakeProbe) ReadFile(p string) ([]byte, error) {
	if v, ok := f.files[p]; ok {
		return []byte(v), nil
	}
	return nil, errors.New("no such file")
}
func (f *fakeProbe) Opens(p string) bool            { return f.readable[p] }
func (f *fakeProbe) MountDebugfs() bool             { return f.debugfs }
func (f *fakeProbe) Executables() ([]string, error) { return f.exes, nil }

func hardened() *fakeProbe {
	return &fakeProbe{
		files: map[string]string{
			"/sys/kernel/security/lockdown":     "none integrity [confidentiality]\n",
			"/proc/sys/kernel/modules_disabled": "1\n",
			"/proc/sys/kernel/sysrq":            "0\n",
		},
		exes: layout.Executables(),
	}
}

func TestSelfCheck(t *testing.T) {
	line, ok := FormatChecks(SelfCheck(hardened()))
	if !ok {
		t.Fatalf("hardened system failed: %s", line)
	}
	for name, mutate := range map[string]func(*fakeProbe){
		"lockdown off":    func(p *fakeProbe) { p.files["/sys/kernel/security/lockdown"] = "[none] integrity confidentiality" },
		"modules enabled": func(p *fakeProbe) { p.files["/proc/sys/kernel/modules_disabled"] = "0" },
		"sysrq":           func(p *fakeProbe) { p.files["/proc/sys/kernel/sysrq"] = "438" },
		"/dev/mem":        func(p *fakeProbe) { p.readable = map[string]bool{"/dev/mem": true} },
		"kcore":           func(p *fakeProbe) { p.readable = map[string]bool{"/proc/kcore": true} },
		"debugfs":         func(p *fakeProbe) { p.debugfs = true },
		"a shell":         func(p *fakeProbe) { p.files["/bin/sh"] = "ELF" },
		"extra binary":    func(p *fakeProbe) { p.exes = append(p.exes, "/usr/bin/strace") },
	} {
		p := hardened()
		mutate(p)
		if line, ok := FormatChecks(SelfCheck(p)); ok || !strings.Contains(line, "FAIL") {
			t.Errorf("%s: self-check passed: %s", name, line)
		}
	}
	// The GPU driver's nvidia-smi is allowed when the image lists it, and
	// only then.
	smi := layout.InSystem(layout.NvidiaDir + "/bin/nvidia-smi")
	p := hardened()
	p.exes = append(p.exes, smi)
	if line, ok := FormatChecks(SelfCheck(p, smi)); !ok {
		t.Errorf("nvidia-smi listed by the image: %s", line)
	}
	if line, ok := FormatChecks(SelfCheck(p)); ok {
		t.Errorf("nvidia-smi not listed by the image passed: %s", line)
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff()
	prev := b.next()
	for i := 0; i < 20; i++ {
		d := b.next()
		if d < prev || d > maxBackoff {
			t.Fatalf("backoff step %d = %v after %v, want growing up to %v", i, d, prev, maxBackoff)
		}
		prev = d
	}
	b.reset()
	if d := b.next(); d != minBackoff {
		t.Fatalf("after reset next() = %v, want %v", d, minBackoff)
	}
}
