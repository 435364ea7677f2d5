package attestation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mkCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func mkEKCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, ek *rsa.PublicKey, model ...string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment,
	}
	if len(model) > 0 {
		// The TCG directoryName SAN: manufacturer, model, version.
		rdn := pkix.RDNSequence{
			{{Type: oidTPMManufacturer, Value: "id:00001014"}},
			{{Type: oidTPMModel, Value: model[0]}},
			{{Type: oidTPMVersion, Value: "id:20191023"}},
		}
		dn, err := asn1.Marshal(rdn)
		if err != nil {
			t.Fatal(err)
		}
		san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn}})
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, ek, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestAppraiseEKClasses(t *testing.T) {
	vendor, vendorKey := mkCA(t, "TPM vendor root")
	swtpm, swtpmKey := mkCA(t, "swtpm-localca")
	ekKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ekDER, _ := x509.MarshalPKIXPublicKey(&ekKey.PublicKey)
	roots := x509.NewCertPool()
	roots.AddCert(vendor)
	now := time.Now()

	for name, tc := range map[string]struct {
		cert   []byte
		want   TrustClass
		reason string
	}{
		"vendor certificate":         {mkEKCert(t, vendor, vendorKey, &ekKey.PublicKey), ClassHardware, ""},
		"swtpm claiming hardware":    {mkEKCert(t, swtpm, swtpmKey, &ekKey.PublicKey), ClassDev, ReasonUnknownCA},
		"swtpm model, vendor CA":     {mkEKCert(t, vendor, vendorKey, &ekKey.PublicKey, "swtpm"), ClassDev, ReasonSoftware},
		"no certificate (simulator)": {nil, ClassDev, ReasonNoCertificate},
	} {
		ek, err := AppraiseEK(ekDER, tc.cert, roots, nil, now)
		if err != nil || ek.Class != tc.want || !strings.HasPrefix(ek.Reason, tc.reason) || (tc.reason == "") != (ek.Reason == "") {
			t.Errorf("AppraiseEK(%s) = %v, %q, %v; want class %s, reason %q", name, ek.Class, ek.Reason, err, tc.want, tc.reason)
		}
	}
	if ek, _ := AppraiseEK(ekDER, mkEKCert(t, vendor, vendorKey, &ekKey.PublicKey), nil, nil, now); ek.Class != ClassDev || ek.Reason != ReasonNoRoots {
		t.Errorf("AppraiseEK(no roots) = %v, %q; want dev, %q", ek.Class, ek.Reason, ReasonNoRoots)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := AppraiseEK(ekDER, mkEKCert(t, vendor, vendorKey, &other.PublicKey), roots, nil, now); CheckOf(err) != CheckEK {
		t.Errorf("AppraiseEK(certificate for another key) = %v, want %s", err, CheckEK)
	}
	if _, err := AppraiseEK([]byte("junk"), nil, roots, nil, now); CheckOf(err) != CheckEK {
		t.Errorf("AppraiseEK(junk) = %v, want %s", err, CheckEK)
	}
	ek1, _ := AppraiseEK(ekDER, nil, nil, nil, now)
	ek2, _ := AppraiseEK(ekDER, mkEKCert(t, vendor, vendorKey, &ekKey.PublicKey), roots, nil, now)
	if ek1.Fingerprint != ek2.Fingerprint || len(ek1.Fingerprint) != 64 {
		t.Errorf("fingerprints %q, %q: want one stable SHA-256 per EK", ek1.Fingerprint, ek2.Fingerprint)
	}
}

func devManifest() *Manifest {
	h := strings.Repeat("ab", 32)
	return &Manifest{Version: ManifestVersion, Build: "b1", BootApplications: []string{h}, PCR11: []string{h},
		SecureBoot: SecureBootPolicy{Required: true, DBCerts: []string{h}}}
}

func TestManifestSignAndParse(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	b, err := SignManifest(devManifest(), key)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(b, []ed25519.PublicKey{otherPub, pub})
	if err != nil || m.Build != "b1" {
		t.Fatalf("ParseManifest() = %v, %v", m, err)
	}
	if _, err := ParseManifest(b, []ed25519.PublicKey{otherPub}); !errors.Is(err, ErrManifestSignature) {
		t.Errorf("ParseManifest(untrusted key) = %v, want ErrManifestSignature", err)
	}
	tampered := []byte(strings.Replace(string(b), `"payload": "ey`, `"payload": "eX`, 1))
	if _, err := ParseManifest(tampered, []ed25519.PublicKey{pub}); err == nil {
		t.Error("ParseManifest(tampered payload) succeeded")
	}
	bad := devManifest()
	bad.Version, bad.BootApplications, bad.PCR11 = 9, []string{"zz"}, nil
	err = bad.Validate()
	for _, want := range []string{"version 9", "boot_applications", "pcr11 is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if _, err := SignManifest(bad, key); err == nil {
		t.Error("SignManifest(invalid) succeeded")
	}
}

// The build inputs are part of what is signed, and a manifest written
// before they existed still parses.
func TestManifestInputs(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	m := devManifest()
	m.Inputs = []BuildInput{
		{Name: "go", Version: "go1.26.8"},
		{Name: "systemd-boot-efi", Version: "252.39-1~deb12u2", SHA256: strings.Repeat("ab", 32)},
		{Name: "go.sum", SHA256: strings.Repeat("cd", 32)},
	}
	b, err := SignManifest(m, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m.Inputs, got.Inputs); diff != "" {
		t.Errorf("ParseManifest(SignManifest(m)).Inputs differ (-want +got):\n%s", diff)
	}
	// The inputs are signed: changing one breaks the signature.
	var sm signedManifest
	if err := json.Unmarshal(b, &sm); err != nil {
		t.Fatal(err)
	}
	sm.Payload = bytes.Replace(sm.Payload, []byte("go1.26.8"), []byte("go1.26.9"), 1)
	forged, _ := json.Marshal(sm)
	if _, err := ParseManifest(forged, []ed25519.PublicKey{pub}); !errors.Is(err, ErrManifestSignature) {
		t.Errorf("ParseManifest(changed input) = %v, want ErrManifestSignature", err)
	}

	// A manifest without the field (every one signed before it existed).
	old := devManifest()
	b, err = SignManifest(old, key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("inputs")) {
		t.Fatal("a manifest without inputs still writes the field")
	}
	if got, err := ParseManifest(b, []ed25519.PublicKey{pub}); err != nil || got.Inputs != nil {
		t.Errorf("ParseManifest(no inputs) = %v, %v; want accepted with no inputs", got, err)
	}

	bad := devManifest()
	bad.Inputs = []BuildInput{{Name: "go.sum", SHA256: "zz"}, {Name: "x"}, {Version: "1"}}
	err = bad.Validate()
	for _, want := range []string{"inputs[0].sha256", "inputs[1] (x): neither", "inputs[2]: name is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(bad inputs) = %v, want it to mention %q", err, want)
		}
	}
}

func TestToken(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	c := Claims{Issuer: "rigos-attest", Subject: "rig-1", IssuedAt: now.Unix(), Expires: now.Add(time.Minute).Unix(), State: "trusted", Class: ClassDev}
	tok, err := SignToken(c, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyToken(tok, pub, now)
	if err != nil || *got != c {
		t.Fatalf("VerifyToken() = %+v, %v; want %+v", got, err, c)
	}
	if _, err := VerifyToken(tok, pub, now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("VerifyToken(later) = %v, want ErrTokenExpired", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := VerifyToken(tok, otherPub, now); !errors.Is(err, ErrTokenKey) {
		t.Errorf("VerifyToken(other key) = %v, want ErrTokenKey", err)
	}
	// Signed by the right key but naming another (kid): refused, so a
	// holder of several keys can never check a token against the wrong one.
	h := b64.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT","kid":"` + KeyID(otherPub) + `"}`))
	body := strings.Split(tok, ".")[1]
	wrongKid := h + "." + body + "." + b64.EncodeToString(ed25519.Sign(key, []byte(h+"."+body)))
	if _, err := VerifyToken(wrongKid, pub, now); !errors.Is(err, ErrTokenKey) {
		t.Errorf("VerifyToken(kid of another key) = %v, want ErrTokenKey", err)
	}
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + b64.EncodeToString([]byte(`{"sub":"rig-1","state":"trusted","exp":9999999999}`)) + "." + parts[2]
	if _, err := VerifyToken(forged, pub, now); !errors.Is(err, ErrTokenSignature) {
		t.Errorf("VerifyToken(forged claims) = %v, want ErrTokenSignature", err)
	}
}

func TestVerifyClockBoundaries(t *testing.T) {
	prev := &Clock{Clock: 100, ResetCount: 3, RestartCount: 1}
	for _, tc := range []struct {
		cur      Clock
		rebooted bool
		ok       bool
	}{
		{Clock{Clock: 100, ResetCount: 3, RestartCount: 1}, false, true},
		{Clock{Clock: 50, ResetCount: 4, Safe: false}, true, true},
		{Clock{Clock: 50, ResetCount: 4, Safe: true}, true, false},
		{Clock{Clock: 200, ResetCount: 2}, false, false},
	} {
		rb, err := VerifyClock(prev, tc.cur)
		if rb != tc.rebooted || (err == nil) != tc.ok {
			t.Errorf("VerifyClock(%+v) = %v, %v; want rebooted %v ok %v", tc.cur, rb, err, tc.rebooted, tc.ok)
		}
	}
}

// An EK certificate written by swtpm_setup with swtpm_localca.
func TestParseTPMInfoRealSwtpm(t *testing.T) {
	b, err := os.ReadFile("testdata/swtpm-ek-rsa2048.der")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ParseTPMInfo(c)
	if err != nil || info.Model != "swtpm" || info.Manufacturer != "id:00001014" || !info.IsSoftware() {
		t.Fatalf("ParseTPMInfo(swtpm EK) = %+v, %v", info, err)
	}
}
