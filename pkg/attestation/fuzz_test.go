package attestation

import (
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/sim/tcglog"
	"github.com/rigos/rigos/pkg/attestation/tcgevent"
)

func FuzzVerifyQuote(f *testing.F) {
	f.Add([]byte{0xff, 'T', 'C', 'G', 0x80, 0x18}, []byte{0, 0x14, 0, 0x0b}, []byte{0, 1})
	f.Fuzz(func(t *testing.T, quote, sig, akPub []byte) {
		_, _ = VerifyQuote(akPub, quote, sig, map[int][]byte{0: make([]byte, 32)}, []byte("nonce"), []int{0})
	})
}

func FuzzAppraiseLogs(f *testing.F) {
	l := tcglog.New()
	l.Measure(4, tcgevent.EvSeparator, []byte{0, 0, 0, 0})
	f.Add(l.Bytes(), []byte{})
	f.Fuzz(func(t *testing.T, fw, rt []byte) {
		q := map[int][]byte{4: l.PCR(4), 15: make([]byte, 32), 0: make([]byte, 32)}
		events, logged, err := replayFirmware(fw, q)
		if err == nil {
			_ = checkUnlogged(q, logged)
			_ = checkManifest(devManifest(), events, q, nil, false)
		}
		// A runtime log may start with a checkpoint only if it is one the
		// verifier issued (none here).
		if base, _, err := replayRuntime(rt, q, nil, 0); err == nil && base != nil {
			t.Fatalf("replayRuntime accepted a checkpoint nobody issued: %+v", base)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(nil)
	b, _ := SignManifest(devManifest(), key)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b, []ed25519.PublicKey{pub})
		if err == nil && m.Validate() != nil {
			t.Fatal("ParseManifest accepted an invalid manifest")
		}
	})
}

func FuzzVerifyToken(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(nil)
	tok, _ := SignToken(Claims{Subject: "n", Expires: 1 << 40}, key)
	f.Add(tok)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = VerifyToken(s, pub, time.Unix(0, 0))
	})
}

func FuzzParseTPMInfo(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0xa4, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, san []byte) {
		c := &x509.Certificate{Extensions: []pkix.Extension{{Id: oidSubjectAltName, Value: san}}}
		_, _ = ParseTPMInfo(c)
	})
}
