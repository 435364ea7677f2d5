package uki

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rigos/rigos/pkg/imager/sbkeys"
)

func stub(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultStub); err != nil {
		t.Skipf("systemd-stub not installed (systemd-boot-efi): %v", err)
	}
	if _, err := exec.LookPath("objcopy"); err != nil {
		t.Skip("objcopy not installed")
	}
	return DefaultStub
}

func sections() []Section {
	return []Section{
		{".osrel", []byte("ID=rigos\n")},
		{".cmdline", []byte("quiet")},
		{".linux", bytes.Repeat([]byte{0x90}, 4096)},
		{".initrd", []byte("initrd")},
	}
}

func TestAssembleReproducibleAndSigned(t *testing.T) {
	s := stub(t)
	a, err := Assemble(s, sections(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Assemble(s, sections(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two assemblies differ")
	}
	keys, _, err := sbkeys.Ensure(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := Sign(a, keys.DB.Signer, keys.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	signed2, _ := Sign(a, keys.DB.Signer, keys.DB.Cert)
	if !bytes.Equal(signed, signed2) {
		t.Error("signing is not deterministic")
	}
	d1, err := AuthenticodeDigest(a)
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := AuthenticodeDigest(signed)
	if !bytes.Equal(d1, d2) {
		t.Error("Authenticode digest changed with signing")
	}
	// sbsigntool's independent verifier accepts the signature for our db
	// certificate and refuses it for another.
	if _, err := exec.LookPath("sbverify"); err != nil {
		t.Skip("sbverify (sbsigntool) not installed")
	}
	p := filepath.Join(t.TempDir(), "uki.efi")
	os.WriteFile(p, signed, 0o600)
	if out, err := exec.Command("sbverify", "--cert", keys.CertPath("db"), p).CombinedOutput(); err != nil {
		t.Fatalf("sbverify: %v: %s", err, out)
	}
	other, _, _ := sbkeys.Ensure(t.TempDir(), "other")
	if err := exec.Command("sbverify", "--cert", other.CertPath("db"), p).Run(); err == nil {
		t.Fatal("sbverify accepted the signature for another db certificate")
	}
}

// systemd-measure (systemd 252) predicts PCR 11 independently.
func TestPredictPCR11MatchesSystemdMeasure(t *testing.T) {
	if _, err := exec.LookPath("/usr/lib/systemd/systemd-measure"); err != nil {
		t.Skip("systemd-measure not installed")
	}
	dir := t.TempDir()
	// RigOS has no systemd boot phases: predict the stub alone.
	args := []string{"calculate", "--bank=sha256", "--phase="}
	for _, s := range sections() {
		p := filepath.Join(dir, s.Name[1:])
		os.WriteFile(p, s.Data, 0o600)
		args = append(args, "--"+s.Name[1:]+"="+p)
	}
	out, err := exec.Command("/usr/lib/systemd/systemd-measure", args...).Output()
	if err != nil {
		t.Skipf("systemd-measure: %v", err)
	}
	want := fmtHex(PredictPCR11(sections()))
	if !bytes.Contains(bytes.ToLower(out), []byte(want)) {
		t.Fatalf("systemd-measure says %s, PredictPCR11 %s", out, want)
	}
}
