package kernel

import (
	"strings"
	"testing"
)

func TestPinned(t *testing.T) {
	l, err := Pinned()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.Package, "linux-image-") || !strings.HasSuffix(l.Package, l.Release) {
		t.Errorf("Pinned() = %+v: package and release disagree", l)
	}
}

func TestCmdline(t *testing.T) {
	c := Cmdline("console=ttyS0")
	for _, want := range []string{"lockdown=confidentiality", "module.sig_enforce=1", "init_on_free=1", "oops=panic", "console=ttyS0"} {
		if !strings.Contains(c, want) {
			t.Errorf("Cmdline() = %q, want %s", c, want)
		}
	}
	for _, p := range Hardened {
		if p.Reason == "" || strings.ContainsAny(p.Value, " \t") {
			t.Errorf("setting %q: every setting needs a reason and no spaces", p.Value)
		}
	}
	if len(Modules()) < 10 {
		t.Errorf("Modules() = %v", Modules())
	}
}
