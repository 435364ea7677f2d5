package cpio

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func sample() []Entry {
	return []Entry{
		{Name: "init", Mode: TypeReg | 0o755, Data: []byte("#init")},
		{Name: "usr/bin/agent", Mode: TypeReg | 0o755, Data: []byte("agent")},
		{Name: "etc/rigos/agent.json", Mode: TypeReg | 0o644, Data: []byte("{}")},
		{Name: "dev/console", Mode: TypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
	}
}

func TestRoundTripAndReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a, sample()); err != nil {
		t.Fatal(err)
	}
	rev := sample()
	rev[0], rev[3] = rev[3], rev[0]
	if err := Write(&b, rev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("archive depends on entry order")
	}
	got, err := Read(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
	}
	if want := "dev,dev/console,etc,etc/rigos,etc/rigos/agent.json,init,usr,usr/bin,usr/bin/agent"; strings.Join(names, ",") != want {
		t.Fatalf("names = %v, want %s", names, want)
	}
	e, err := Find(got, "usr/bin/agent")
	if err != nil || string(e.Data) != "agent" || e.Mode != TypeReg|0o755 {
		t.Fatalf("Find(agent) = %+v, %v", e, err)
	}
}

// GNU cpio must read our archives the way the kernel does.
func TestGNUCpioReadsIt(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	var a bytes.Buffer
	if err := Write(&a, sample()); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = &a
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "usr/bin/agent") {
		t.Fatalf("cpio -t = %q", out)
	}
}

func TestRejects(t *testing.T) {
	var a bytes.Buffer
	_ = Write(&a, sample())
	good := a.Bytes()
	for name, b := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"bad magic": append([]byte("070707"), good[6:]...),
		"empty":     nil,
	} {
		if _, err := Read(bytes.NewReader(b)); err == nil {
			t.Errorf("Read(%s) succeeded", name)
		}
	}
	if err := Write(&a, []Entry{{Name: "../etc/passwd"}}); err == nil {
		t.Error("Write(../) succeeded")
	}
}

func FuzzRead(f *testing.F) {
	var a bytes.Buffer
	_ = Write(&a, sample())
	f.Add(a.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = Read(bytes.NewReader(b)) })
}
