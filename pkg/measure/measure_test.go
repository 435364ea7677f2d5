package measure

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() []byte {
	var b []byte
	for i, p := range []string{PhaseEnterInitrd, PhaseModulesLocked, PhaseStartAgent} {
		b = append(b, NewEvent(uint64(i), KindPhase, []byte(p)).Encode()...)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	events, err := Parse(sample())
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if got, want := Phases(events), []string{PhaseEnterInitrd, PhaseModulesLocked, PhaseStartAgent}; !cmp.Equal(got, want) {
		t.Errorf("Phases() = %v, want %v", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	good := sample()
	relabelled := bytes.Replace(good, []byte("modules-locked"), []byte("modules-LOCKED"), 1)
	e0 := NewEvent(0, KindPhase, []byte("a")).Encode()
	e1 := NewEvent(1, KindPhase, []byte("b")).Encode()
	other := NewEvent(0, KindPhase, []byte("a"))
	other.PCR = 12
	for name, b := range map[string][]byte{
		"truncated":   good[:len(good)-3],
		"relabelled":  relabelled,
		"reordered":   append(append([]byte(nil), e1...), e0...),
		"removed":     append(append([]byte(nil), e0...), NewEvent(2, KindPhase, []byte("c")).Encode()...),
		"garbage":     []byte("not a log at all"),
		"other pcr":   other.Encode(),
		"huge length": {0, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%s) = %v, want ErrMalformed", name, err)
		}
	}
}

func TestRecorder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	var extended []Event
	extend := func(i int, d []byte) error {
		if i != RuntimePCR {
			t.Errorf("extend(PCR %d), want %d", i, RuntimePCR)
		}
		extended = append(extended, Event{Digest: d})
		return nil
	}
	r, err := NewRecorder(path, extend)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Record(KindPhase, []byte(PhaseStartAgent)); err != nil {
		t.Fatal(err)
	}
	// A second recorder (a restarted agent) continues the numbering.
	r2, err := NewRecorder(path, extend)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Record(KindPhase, []byte("again")); err != nil {
		t.Fatal(err)
	}
	b, _ := readFile(path)
	events, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(recorded log) = %v", err)
	}
	if !bytes.Equal(Replay(events), Replay(extended)) {
		t.Error("log replay differs from what was extended")
	}
}

func TestWorkloads(t *testing.T) {
	w := Workload{ID: "job-1", Image: "rigos.test/w:1", Digest: "sha256:aa", Config: "sha256:bb", TrustedTier: true,
		Outbound: true, Ports: []uint32{8080}}
	events := []Event{
		NewEvent(0, KindPhase, []byte(PhaseEnterInitrd)),
		NewEvent(1, KindWorkload, w.Encode()),
	}
	got, err := Workloads(events)
	if err != nil || len(got) != 1 || !cmp.Equal(got[0], w) || got[0].Name() != "job-1@sha256:aa" {
		t.Fatalf("Workloads() = %+v, %v", got, err)
	}
	for name, data := range map[string]string{
		"not JSON":      "job-1",
		"no digest":     `{"id":"x"}`,
		"unknown field": `{"id":"x","digest":"sha256:aa","extra":1}`,
	} {
		if _, err := Workloads([]Event{NewEvent(0, KindWorkload, []byte(data))}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestGPUInventories(t *testing.T) {
	g := GPUInventory{Count: 8, Digest: strings.Repeat("ab", 32)}
	got, err := GPUInventories([]Event{NewEvent(0, KindGPU, g.Encode())})
	if err != nil || len(got) != 1 || got[0] != g {
		t.Fatalf("GPUInventories() = %+v, %v", got, err)
	}
	if _, err := GPUInventories([]Event{NewEvent(0, KindGPU, []byte(`{"count":1,"digest":"short"}`))}); err == nil {
		t.Error("a short digest was accepted")
	}
}
