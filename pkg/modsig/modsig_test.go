package modsig

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rigos/rigos/pkg/modsig/modsigtest"
)

func TestSignRoundTrip(t *testing.T) {
	key, cert := modsigtest.Key(t, "RigOS db")
	_, other := modsigtest.Key(t, "someone else")
	body := []byte("\x7fELF pretend module body")
	signed, err := Sign(body, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(signed, []byte(Magic)) || !bytes.HasPrefix(signed, body) {
		t.Fatal("signed module does not keep the body and end with the magic")
	}
	gotBody, sig, err := Split(signed)
	if err != nil || !bytes.Equal(gotBody, body) || len(sig) == 0 {
		t.Fatalf("Split: %v, body equal %v", err, bytes.Equal(gotBody, body))
	}
	s, err := ReadSigner(signed)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Is(cert) || s.Is(other) {
		t.Fatalf("signer %v: Is(own)=%v Is(other)=%v", s, s.Is(cert), s.Is(other))
	}
	// Signing again replaces the signature, byte for byte the same
	// (RSA PKCS #1 v1.5 is deterministic): builds stay reproducible.
	again, err := Sign(signed, key, cert)
	if err != nil || !bytes.Equal(again, signed) {
		t.Fatalf("re-signing: %v, equal %v", err, bytes.Equal(again, signed))
	}
	if _, err := ReadSigner(body); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned module: %v, want ErrUnsigned", err)
	}
}

// The signature is the one Linux's documented openssl recipe (and
// sign-file) makes, byte for byte.
func TestSignMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	key, cert := modsigtest.Key(t, "RigOS db")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	body := bytes.Repeat([]byte("module"), 1000)
	in := write("mod", body)
	crt := write("crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	k := write("key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	want, err := exec.Command("openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-outform", "DER",
		"-md", "sha256", "-signer", crt, "-inkey", k, "-in", in).Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	signed, err := Sign(body, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := Split(signed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("signature differs from openssl's:\n got %x\nwant %x", got, want)
	}
}

func TestSplitRefusesDamage(t *testing.T) {
	key, cert := modsigtest.Key(t, "RigOS db")
	signed, err := Sign([]byte("body"), key, cert)
	if err != nil {
		t.Fatal(err)
	}
	n := len(signed) - len(Magic)
	tooLong := bytes.Clone(signed)
	tooLong[n-1] = 0xff // signature length beyond the module
	wrongType := bytes.Clone(signed)
	wrongType[n-trailerLen+2] = 1
	for name, mod := range map[string][]byte{
		"length beyond the module": tooLong,
		"not PKCS#7":               wrongType,
		"trailer cut":              []byte("xx" + Magic),
	} {
		if _, _, err := Split(mod); err == nil {
			t.Errorf("%s: Split accepted it", name)
		}
		if _, err := ReadSigner(mod); err == nil {
			t.Errorf("%s: ReadSigner accepted it", name)
		}
	}
}

func FuzzReadSigner(f *testing.F) {
	key, cert := modsigtest.Key(f, "RigOS db")
	signed, err := Sign([]byte("body"), key, cert)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, mod []byte) {
		body, sig, err := Split(mod)
		if err == nil && len(body)+len(sig) > len(mod) {
			t.Fatalf("Split grew the module")
		}
		_, _ = ReadSigner(mod)
	})
}
