package attestation_test

import (
	"testing"

	. "github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/devboot"
)

// BenchmarkAppraise measures one full appraisal of real simulator
// evidence: quote signature, nonce, PCR digest, clock, firmware and
// runtime log replay, Secure Boot parsing and the manifest policy.
func BenchmarkAppraise(b *testing.B) {
	n := boot(b, 1, devboot.Default())
	ev, no := gather(b, n)
	req := request(n, ev, no)
	if err := Appraise(req).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := Appraise(req); len(r.Failures) != 0 {
			b.Fatal(r.Err())
		}
	}
}
