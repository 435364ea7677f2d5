package softtpm

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/attestation"
)

// The software TPM must pass the real verifier path end to end, and stay
// dev-class.
func TestPassesRealAppraisal(t *testing.T) {
	s, err := New(devboot.Default())
	if err != nil {
		t.Fatal(err)
	}
	ekDER, _ := s.EKPublic()
	ek, err := attestation.AppraiseEK(ekDER, s.EKCertificate(), nil, nil, time.Now())
	if err != nil || ek.Class != attestation.ClassDev {
		t.Fatalf("AppraiseEK() = %v, %v; want dev class", ek.Class, err)
	}
	secret, cred, err := attestation.MakeCredential(ek.Public, s.AKParams(), nil)
	if err != nil {
		t.Fatalf("MakeCredential() = %v", err)
	}
	got, err := s.Activate(cred)
	if err != nil || attestation.VerifyActivation(secret, got) != nil {
		t.Fatalf("Activate() = %x, %v; want the secret", got, err)
	}
	other, _ := New(devboot.Default())
	if _, err := other.Activate(cred); err == nil {
		t.Fatal("another software TPM activated the credential")
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	ev, err := s.Collect(nonce, attestation.DefaultPCRs, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := attestation.Appraise(attestation.Request{AKPublic: s.AKParams().Public, Nonce: nonce, PCRs: attestation.DefaultPCRs,
		Evidence: ev, Manifests: []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev")}})
	if err := r.Err(); err != nil {
		t.Fatalf("Appraise() = %v", err)
	}
}
