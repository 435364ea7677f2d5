package ekroots

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"crypto/x509"
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
