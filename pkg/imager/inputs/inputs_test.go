package inputs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The lock parses and names every file the imager uses.
func TestPinned(t *testing.T) {
	pkgs, files, err := Pinned()
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Error("Pinned() = no packages")
	}
	names := map[string]bool{}
	for _, f := range files {
		names[f.Name] = true
	}
	for _, want := range []string{Stub, MkfsErofs, LibLZ4, LibseccompStatic} {
		if !names[want] {
			t.Errorf("inputs.lock has no file %q", want)
		}
	}
}

func TestParseRefusesMalformedLines(t *testing.T) {
	for _, line := range []string{
		"deb systemd-boot-efi 252",
		"deb a 1 " + strings.Repeat("g", 64),
		"deb a 1 " + strings.Repeat("A", 64),
		"tarball a 1 " + strings.Repeat("a", 64),
	} {
		if _, _, err := parse(line); err == nil {
			t.Errorf("parse(%q) = nil error, want one", line)
		}
	}
}

// A file whose digest differs from the pin, or that is missing, stops
// the build with both digests named.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stub"), []byte("stub"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := "ef8a9e8ed5d4b0e9eae2a6d4d5c1bbfe5e0c1d78b8f4e9e36cc8a8ea0db6ab07" // not the digest of "stub"
	sum, err := FileSHA256(filepath.Join(dir, "stub"))
	if err != nil {
		t.Fatal(err)
	}
	paths, err := check(dir, []File{{Name: "stub", Path: "stub", SHA256: sum}})
	if err != nil || paths["stub"] != filepath.Join(dir, "stub") {
		t.Errorf("check(matching) = %v, %v", paths, err)
	}
	_, err = check(dir, []File{{Name: "stub", Path: "stub", SHA256: good}, {Name: "gone", Path: "gone", SHA256: sum}})
	for _, want := range []string{"pinned input stub", "has SHA-256 " + sum + ", want " + good, "pinned input gone", "no such file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check(mismatch, missing) = %v, want it to name %q", err, want)
		}
	}
}
