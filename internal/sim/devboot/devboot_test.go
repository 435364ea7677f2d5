package devboot

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"testing"

	"github.com/google/go-attestation/attest"
)

func replay(t *testing.T, b Boot) []attest.Event {
	t.Helper()
	el, err := attest.ParseEventLog(b.Log.Bytes())
	if err != nil {
		t.Fatalf("ParseEventLog() = %v", err)
	}
	var pcrs []attest.PCR
	for _, i := range b.Log.PCRs() {
		pcrs = append(pcrs, attest.PCR{Index: i, Digest: b.Log.PCR(i), DigestAlg: crypto.SHA256})
	}
	ev, err := el.Verify(pcrs)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	return ev
}

func TestSecureBootStateParses(t *testing.T) {
	cfg := Default()
	sb, err := attest.ParseSecurebootState(replay(t, Simulate(cfg)))
	if err != nil {
		t.Fatalf("ParseSecurebootState() = %v", err)
	}
	if !sb.Enabled {
		t.Error("Secure Boot not enabled")
	}
	if len(sb.PermittedKeys) != 1 || !bytes.Equal(sb.PermittedKeys[0].Raw, cfg.DB.Raw) {
		t.Errorf("db = %v, want the dev db certificate", sb.PermittedKeys)
	}
	if len(sb.PostSeparatorAuthority) != 1 || !bytes.Equal(sb.PostSeparatorAuthority[0].Raw, cfg.DB.Raw) {
		t.Errorf("authority = %v, want the dev db certificate", sb.PostSeparatorAuthority)
	}
}

func TestDebugModeRefused(t *testing.T) {
	cfg := Default()
	cfg.DebugMode = true
	if _, err := attest.ParseSecurebootState(replay(t, Simulate(cfg))); err == nil {
		t.Fatal("ParseSecurebootState() accepted a debug-mode boot")
	}
}

func TestPredictionsMatchBoot(t *testing.T) {
	cfg := Default()
	b := Simulate(cfg)
	if !bytes.Equal(b.Log.PCR(11), PCR11(cfg.Sections)) {
		t.Error("PCR11() prediction differs from the simulated boot")
	}
	if !bytes.Equal(b.UKIDigest, UKIDigest(cfg.Sections)) {
		t.Error("UKIDigest() differs from the simulated boot")
	}
	cfg.Sections[2].Content = []byte("init=/bin/sh")
	if bytes.Equal(PCR11(cfg.Sections), b.Log.PCR(11)) {
		t.Error("changing the command line did not change PCR 11")
	}
	if !bytes.Equal(DevKeysDB().Raw, Default().DB.Raw) {
		t.Error("dev keys are not deterministic")
	}
}

func DevKeysDB() *x509.Certificate { _, _, db := DevKeys(); return db }
