package pid1

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/rigos/rigos/pkg/layout"
)

func efivar(t *testing.T, dir, name string, value byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+"-"+efiGlobal), []byte{6, 0, 0, 0, value}, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadSBState(t *testing.T) {
	dir := t.TempDir()
	if s, err := readSBState(dir); err != nil || s.secureBoot || s.setupMode {
		t.Errorf("no variables: %+v, %v; want both off", s, err)
	}
	efivar(t, dir, "SecureBoot", 0)
	efivar(t, dir, "SetupMode", 1)
	if s, err := readSBState(dir); err != nil || s.secureBoot || !s.setupMode {
		t.Errorf("setup mode: %+v, %v", s, err)
	}
	os.WriteFile(filepath.Join(dir, "SetupMode-"+efiGlobal), []byte{1, 2}, 0o644)
	if _, err := readSBState(dir); err == nil {
		t.Error("a truncated SetupMode read without error")
	}
}

// The keys are written db, KEK, then PK (which ends Setup Mode), each in
// one write of the attributes and the image's signed payload; an
// existing variable is unlocked first.
func TestEnrolKeys(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	for i, e := range enrolments {
		p := filepath.Join(root, e.payload)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte{byte(i), 0xaa}, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "db-"+efiImageSecurity), []byte("old"), 0o644)
	var unlocked []string
	if err := enrolKeys(dir, root, func(p string) error { unlocked = append(unlocked, filepath.Base(p)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(unlocked) != 1 || unlocked[0] != "db-"+efiImageSecurity {
		t.Errorf("unlocked %v, want the existing db only", unlocked)
	}
	for i, e := range enrolments {
		b, err := os.ReadFile(filepath.Join(dir, e.file))
		want := binary.LittleEndian.AppendUint32(nil, authAttributes)
		want = append(want, byte(i), 0xaa)
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s = %x, %v; want %x", e.file, b, err, want)
		}
	}
	if enrolments[len(enrolments)-1].payload != layout.SecureBootPK {
		t.Error("PK is not written last: the firmware would leave Setup Mode before db and KEK are in")
	}
	// A payload missing from the image stops before anything is written.
	empty := t.TempDir()
	if err := enrolKeys(empty, t.TempDir(), func(string) error { return nil }); err == nil {
		t.Error("enrolKeys without payloads succeeded")
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("wrote %d variables without payloads", len(ents))
	}
}
