package ekroots

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"crypto/x509"

	"github.com/rigos/rigos/pkg/attestation"
)

// referenceDate is when the bundle was last reviewed: a CA expired by then
// must be removed or marked "kept" in SOURCES.md.
var referenceDate = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

type row struct{ vendor, sha256, notAfter, note string }

func sourceRows(t *testing.T) map[string]row {
	t.Helper()
	rows := map[string]row{}
	for _, l := range strings.Split(string(Sources()), "\n") {
		f := strings.Split(l, "|")
		if len(f) != 9 || !strings.HasSuffix(strings.TrimSpace(f[1]), ".pem") {
			continue
		}
		file := strings.TrimSpace(f[1])
		if _, dup := rows[file]; dup {
			t.Errorf("SOURCES.md lists %s twice", file)
		}
		rows[file] = row{vendor: strings.TrimSpace(f[2]), sha256: strings.TrimSpace(f[5]), notAfter: strings.TrimSpace(f[6]), note: strings.TrimSpace(f[7])}
	}
	return rows
}

func TestBundle(t *testing.T) {
	certs, err := Certificates()
	if err != nil {
		t.Fatal(err)
	}
	rows := sourceRows(t)
	if len(certs) != len(rows) {
		t.Errorf("%d certificate files, %d rows in SOURCES.md", len(certs), len(rows))
	}
	seen := map[string]string{}
	for _, c := range certs {
		r, ok := rows[c.File]
		if !ok {
			t.Errorf("%s: not in SOURCES.md", c.File)
			continue
		}
		sum := sha256.Sum256(c.Raw)
		fp := hex.EncodeToString(sum[:])
		if fp != r.sha256 {
			t.Errorf("%s: SHA-256 %s, SOURCES.md says %s", c.File, fp, r.sha256)
		}
		if other, dup := seen[fp]; dup {
			t.Errorf("%s duplicates %s", c.File, other)
		}
		seen[fp] = c.File
		if got := c.NotAfter.UTC().Format(time.DateOnly); got != r.notAfter {
			t.Errorf("%s: not after %s, SOURCES.md says %s", c.File, got, r.notAfter)
		}
		if !strings.HasPrefix(c.File[len(c.Role)+1:], r.vendor+"_") {
			t.Errorf("%s: file name does not start with its vendor %s", c.File, r.vendor)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			t.Errorf("%s: not a CA certificate", c.File)
		}
		if c.NotAfter.Before(referenceDate) && !strings.Contains(r.note, "kept") {
			t.Errorf("%s: expired %s, before the reference date %s: remove it or mark it kept for old TPMs", c.File, r.notAfter, referenceDate.Format(time.DateOnly))
		}
		selfSigned := bytes.Equal(c.RawSubject, c.RawIssuer)
		switch {
		case c.Role == Root && !selfSigned && !strings.HasPrefix(r.note, "anchor"):
			t.Errorf("%s: a root that is not self-signed must be noted as an anchor", c.File)
		case c.Role == Intermediate && selfSigned:
			t.Errorf("%s: self-signed, so it belongs in roots/", c.File)
		}
	}
}

// TestIntermediatesChain checks every bundled intermediate chains to a
// bundled root at the reference date: the vendors' chains are whole.
func TestIntermediatesChain(t *testing.T) {
	certs, err := Certificates()
	if err != nil {
		t.Fatal(err)
	}
	roots, inter, err := Pools()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.Role != Intermediate {
			continue
		}
		chains, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: referenceDate,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			t.Errorf("%s: %v", c.File, err)
			continue
		}
		top := chains[0][len(chains[0])-1]
		if v := strings.SplitN(c.File[len(c.Role)+1:], "_", 2)[0]; !strings.Contains(vendorOf(certs, top), v) && !(strings.Contains(c.File, "pluton") && vendorOf(certs, top) == "MSFT") {
			t.Errorf("%s chains to %s, another vendor's root", c.File, top.Subject)
		}
	}
}

func vendorOf(certs []Cert, c *x509.Certificate) string {
	for _, b := range certs {
		if b.Equal(c) {
			return strings.SplitN(b.File[len(b.Role)+1:], "_", 2)[0]
		}
	}
	return ""
}

// TestForgedVendorName: an EK certificate from a self-made CA that copies
// a vendor root's name byte for byte stays dev-class under the bundle.
func TestForgedVendorName(t *testing.T) {
	certs, err := Certificates()
	if err != nil {
		t.Fatal(err)
	}
	roots, inter, err := Pools()
	if err != nil {
		t.Fatal(err)
	}
	var vendor *x509.Certificate
	for _, c := range certs {
		if c.File == "roots/IFX_infineon-optiga-rsa-root-ca.pem" {
			vendor = c.Certificate
		}
	}
	if vendor == nil {
		t.Fatal("Infineon OPTIGA RSA root missing from the bundle")
	}
	now := referenceDate
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), RawSubject: vendor.RawSubject, SubjectKeyId: vendor.SubjectKeyId,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	forgedCA, _ := x509.ParseCertificate(caDER)
	ekKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ekDER, _ := x509.MarshalPKIXPublicKey(&ekKey.PublicKey)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment, AuthorityKeyId: vendor.SubjectKeyId}
	certDER, err := x509.CreateCertificate(rand.Reader, leaf, forgedCA, &ekKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := attestation.AppraiseEK(ekDER, certDER, roots, inter, now)
	if err != nil || ek.Class != attestation.ClassDev || !strings.HasPrefix(ek.Reason, attestation.ReasonUnknownCA) {
		t.Errorf("AppraiseEK(forged %s) = %v, %q, %v; want dev-class, %q", vendor.Subject, ek.Class, ek.Reason, err, attestation.ReasonUnknownCA)
	}
	// The same certificate under the forged CA, were it trusted, would be
	// hardware: the test above fails for the right reason.
	forged := x509.NewCertPool()
	forged.AddCert(forgedCA)
	if ek, err := attestation.AppraiseEK(ekDER, certDER, forged, nil, now); err != nil || ek.Class != attestation.ClassHardware {
		t.Errorf("AppraiseEK(under its own CA) = %v, %v; want hardware", ek.Class, err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherDER, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	if _, err := attestation.AppraiseEK(otherDER, certDER, roots, inter, now); attestation.CheckOf(err) != attestation.CheckEK {
		t.Errorf("AppraiseEK(certificate for another key) = %v, want %s", err, attestation.CheckEK)
	}
}
