package disk

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReproducibleAndReadable(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1790000000")
	uki := bytes.Repeat([]byte("UKI!"), 300_000)
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		p := filepath.Join(dir, "img"+string(rune('a'+i)))
		if _, err := Write(p, uki, []byte("system"), Layout{Seed: []byte("build-1"), State: 8 << 20}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Fatal("two images of the same inputs differ")
	}
	p := filepath.Join(dir, "imga")
	got, err := ReadUKI(p)
	if err != nil || !bytes.Equal(got, uki) {
		t.Fatalf("ReadUKI() = %d bytes, %v; want the UKI back", len(got), err)
	}
	if _, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.Command("sgdisk", "-v", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk -v: %v: %s", err, out)
		}
	}
}

// A half-written image is refused with a clear error, not half-read.
func TestReadUKIRejectsDamagedImages(t *testing.T) {
	uki := bytes.Repeat([]byte("UKI!"), 1000)
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	if _, err := Write(p, uki, []byte("system"), Layout{Seed: []byte("x"), State: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for name, img := range map[string][]byte{
		"truncated": b[:len(b)/3],
		"no GPT":    append(make([]byte, 2*512), b[2*512:]...),
		"empty":     nil,
	} {
		q := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(q, img, 0o600)
		if got, err := ReadUKI(q); err == nil && bytes.Equal(got, uki) {
			t.Errorf("ReadUKI(%s) succeeded", name)
		}
	}
}
