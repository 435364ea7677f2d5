package tcglog

import (
	"bytes"
	"crypto"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/rigos/rigos/pkg/attestation/tcgevent"
)

func TestLogParsesAndReplays(t *testing.T) {
	l := New()
	l.Measure(0, tcgevent.EvSCRTMVersion, []byte("fw 1.0"))
	l.Measure(0, tcgevent.EvSeparator, []byte{0, 0, 0, 0})
	l.Append(4, tcgevent.EvEFIBootServicesApp, bytes.Repeat([]byte{7}, 32), []byte("image"))
	l.Append(0, tcgevent.EvNoAction, nil, []byte("ignored"))

	el, err := attest.ParseEventLog(l.Bytes())
	if err != nil {
		t.Fatalf("ParseEventLog() = %v", err)
	}
	var pcrs []attest.PCR
	for _, i := range l.PCRs() {
		pcrs = append(pcrs, attest.PCR{Index: i, Digest: l.PCR(i), DigestAlg: crypto.SHA256})
	}
	events, err := el.Verify(pcrs)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if len(events) != 3 {
		t.Fatalf("Verify() returned %d events, want 3", len(events))
	}
	pcrs[0].Digest = make([]byte, 32)
	if _, err := el.Verify(pcrs); err == nil {
		t.Fatal("Verify() with a wrong PCR 0 succeeded")
	}
}
