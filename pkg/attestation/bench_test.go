package attestation_test

import (
	"testing"
	"time"

	"github.com/rigos/rigos/internal/sim/devboot"
	. "github.com/rigos/rigos/pkg/attestation"
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

// BenchmarkActivation measures the verifier's half of the proof every
// connection now makes: TPM2_MakeCredential for the node's EK and AK
// (checking the AK first), and the comparison of the returned secret.
// The node's half, TPM2_ActivateCredential, runs in its TPM.
func BenchmarkActivation(b *testing.B) {
	n := boot(b, 1, devboot.Default())
	ekDER, err := n.Att.EKPublic()
	if err != nil {
		b.Fatal(err)
	}
	ek, err := AppraiseEK(ekDER, nil, nil, nil, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	ak := n.Att.AKParams()
	b.ReportAllocs()
	for b.Loop() {
		secret, _, err := MakeCredential(ek.Public, ak, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifyActivation(secret, secret); err != nil {
			b.Fatal(err)
		}
	}
}
