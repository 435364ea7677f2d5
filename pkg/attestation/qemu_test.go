package attestation_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"os"
	"slices"
	"testing"

	. "github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/measure"
)

// Evidence recorded from a real boot of a RigOS image in QEMU (OVMF with
// Secure Boot and RigOS keys, swtpm), with that build's signed manifest.
// Re-record with RIGOS_RECORD=1 make test-vm.
func loadQEMU(t testing.TB) (*Dump, *Manifest) {
	t.Helper()
	b, err := os.ReadFile("testdata/qemu-evidence.json")
	if err != nil {
		t.Fatalf("recorded evidence missing: %v", err)
	}
	d, err := ParseDump(b)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := os.ReadFile("testdata/qemu-manifest.pub")
	blk, _ := pem.Decode(pb)
	if blk == nil {
		t.Fatal("testdata/qemu-manifest.pub: no PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := os.ReadFile("testdata/qemu-manifest.json")
	m, err := ParseManifest(mb, []ed25519.PublicKey{pub.(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	return d, m
}

func TestRecordedQEMUBootPasses(t *testing.T) {
	d, m := loadQEMU(t)
	req := d.Request()
	req.Manifests = []*Manifest{m}
	r := Appraise(req)
	if err := r.Err(); err != nil {
		t.Fatalf("Appraise(recorded QEMU boot) = %v", err)
	}
	if r.Manifest != m.Build || len(r.BootApplications) == 0 {
		t.Errorf("manifest %q, %d boot applications", r.Manifest, len(r.BootApplications))
	}
	if got := measure.Phases(r.RuntimeEvents); !slices.Equal(got, m.Phases) {
		t.Errorf("phases = %v, want %v", got, m.Phases)
	}
}

func TestRecordedQEMUBootTampering(t *testing.T) {
	d, m := loadQEMU(t)
	base := d.Request()
	base.Manifests = []*Manifest{m}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	for name, tc := range map[string]struct {
		mutate func(r *Request)
		want   Check
	}{
		// Data the policy relies on is digest-checked: one byte of the
		// measured SecureBoot variable's name.
		"PCR 7 variable byte": {func(r *Request) {
			i := bytes.Index(r.Evidence.FirmwareLog, []byte("S\x00e\x00c\x00u\x00r\x00e\x00B\x00o\x00o\x00t\x00"))
			r.Evidence.FirmwareLog = flip(r.Evidence.FirmwareLog, i)
		}, CheckSecureBoot},
		"firmware log cut":    {func(r *Request) { r.Evidence.FirmwareLog = r.Evidence.FirmwareLog[:len(r.Evidence.FirmwareLog)-40] }, CheckFirmwareLog},
		"runtime log dropped": {func(r *Request) { r.Evidence.RuntimeLog = nil }, CheckRuntimeLog},
		"quote byte":          {func(r *Request) { r.Evidence.Quote = flip(r.Evidence.Quote, len(r.Evidence.Quote)-3) }, CheckSignature},
		"other nonce":         {func(r *Request) { r.Nonce = flip(r.Nonce, 0) }, CheckNonce},
		"unknown build": {func(r *Request) {
			other := *m
			other.BootApplications = []string{"00" + m.BootApplications[0][2:]}
			other.PCR11 = []string{"00" + m.PCR11[0][2:]}
			r.Manifests = []*Manifest{&other}
		}, CheckBootApp},
	} {
		t.Run(name, func(t *testing.T) {
			req := base
			tc.mutate(&req)
			r := Appraise(req)
			if r.Err() == nil {
				t.Fatal("tampered evidence passed")
			}
			if tc.want != "" && !slices.Contains(failed(r), tc.want) {
				t.Fatalf("failures %v, want %s", failed(r), tc.want)
			}
		})
	}
}

func BenchmarkAppraiseQEMU(b *testing.B) {
	d, m := loadQEMU(b)
	req := d.Request()
	req.Manifests = []*Manifest{m}
	b.ReportAllocs()
	for b.Loop() {
		if r := Appraise(req); len(r.Failures) != 0 {
			b.Fatal(r.Err())
		}
	}
}

// The appraisal replays and reads the SHA-256 bank only. A SHA-1 digest
// that disagrees with its event changes nothing (no SHA-1 PCR is quoted,
// so it could not be checked), while the same edit in the SHA-256 digest
// fails the replay.
func TestRecordedQEMUSHA1BankIgnored(t *testing.T) {
	d, m := loadQEMU(t)
	log := d.Request().Evidence.FirmwareLog
	// The Spec ID header is a SHA-1-format record; the first crypto-agile
	// record follows: PCR, type, digest count, then (alg, digest) pairs.
	off := 32 + int(binary.LittleEndian.Uint32(log[28:32]))
	sizes := map[uint16]int{0x0004: 20, 0x000b: 32, 0x000c: 48, 0x000d: 64, 0x0012: 32}
	at := map[uint16]int{}
	p := off + 12
	for range binary.LittleEndian.Uint32(log[off+8:]) {
		alg := binary.LittleEndian.Uint16(log[p:])
		at[alg] = p + 2
		p += 2 + sizes[alg]
	}
	sha1At, sha256At := at[0x0004], at[0x000b]
	if sha1At == 0 || sha256At == 0 {
		t.Fatalf("first event's digests at %v, want SHA-1 and SHA-256", at)
	}
	for name, tc := range map[string]struct {
		at   int
		pass bool
	}{"SHA-1 digest": {sha1At, true}, "SHA-256 digest": {sha256At, false}} {
		t.Run(name, func(t *testing.T) {
			req := d.Request()
			req.Manifests = []*Manifest{m}
			req.Evidence.FirmwareLog = bytes.Clone(log)
			req.Evidence.FirmwareLog[tc.at] ^= 0xff
			r := Appraise(req)
			if got := r.Err() == nil; got != tc.pass {
				t.Fatalf("Appraise(changed %s) passed = %v (%v), want %v", name, got, r.Err(), tc.pass)
			}
		})
	}
}
