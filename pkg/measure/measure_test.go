package measure

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
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

// Workloads fill the runtime log only up to its reserve: then they are
// refused with ErrLogFull (nothing extended), while the node's own events
// still fit, and the whole log stays within what the verifier accepts, so
// a node that ran as many workloads as fit keeps passing appraisals.
func TestRecorderKeepsRoomForTheNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	extends := 0
	r, err := NewRecorder(path, func(int, []byte) error { extends++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	big := Workload{ID: "w", Image: strings.Repeat("r", 1800), Digest: "sha256:" + strings.Repeat("a", 64)}.Encode()
	if _, err := r.Record(KindWorkload, append(big, make([]byte, MaxWorkloadData)...)); err == nil {
		t.Fatal("Record(oversized workload event) = nil, want an error")
	}
	n := 0
	for ; n < MaxEvents; n++ {
		if _, err = r.Record(KindWorkload, big); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrLogFull) {
		t.Fatalf("after %d workloads: %v, want ErrLogFull", n, err)
	}
	before := extends
	if _, err := r.Record(KindWorkload, big); !errors.Is(err, ErrLogFull) || extends != before {
		t.Fatalf("a workload on a full log: %v (extends %d→%d), want ErrLogFull and nothing extended", err, before, extends)
	}
	for range 8 {
		if _, err := r.Record(KindGPU, []byte(strings.Repeat("g", 1024))); err != nil {
			t.Fatalf("the node's own event on a log full of workloads: %v", err)
		}
	}
	b, _ := readFile(path)
	if len(b) > MaxLogBytes {
		t.Fatalf("log of %d bytes exceeds MaxLogBytes %d", len(b), MaxLogBytes)
	}
	if events, err := Parse(b); err != nil || len(events) != n+8 {
		t.Fatalf("Parse(full log) = %d events, %v; want %d", len(events), err, n+8)
	}
	t.Logf("%d workload events of %d bytes fit", n, len(big))
}

// A verifier-issued checkpoint replaces the records it stands for: the
// compacted log replays to the same PCR value, keeps later records and
// the numbering, and frees room; a checkpoint that does not match the
// log (other PCR, more records than there are) changes nothing.
func TestCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	var extended []Event
	r, err := NewRecorder(path, func(_ int, d []byte) error { extended = append(extended, Event{Digest: d}); return nil })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := r.Record(KindWorkload, []byte(fmt.Sprintf(`{"id":"w%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	pcr := hex.EncodeToString(Replay(extended[:6]))
	bad := Checkpoint{Boot: 1, Events: 6, PCR: strings.Repeat("00", 32)}
	if err := r.Compact(bad.Encode()); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("Compact(wrong PCR) = %v, want ErrNotCovered", err)
	}
	if err := r.Compact(Checkpoint{Boot: 1, Events: 11, PCR: pcr}.Encode()); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("Compact(beyond the log) = %v, want ErrNotCovered", err)
	}
	before := r.Size()
	cp := Checkpoint{Boot: 1, Events: 6, PCR: pcr, GPU: "none"}
	if err := r.Compact(cp.Encode()); err != nil {
		t.Fatal(err)
	}
	if r.Size() >= before {
		t.Errorf("size after compaction %d, before %d", r.Size(), before)
	}
	if _, err := r.Record(KindWorkload, []byte(`{"id":"after"}`)); err != nil {
		t.Fatal(err)
	}
	b, _ := readFile(path)
	events, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(compacted log) = %v", err)
	}
	base, rest, err := Base(events)
	if err != nil || base == nil || *base != cp || len(rest) != 5 || rest[0].Recnum != 6 || rest[4].Recnum != 10 {
		t.Fatalf("compacted log: base %+v, %d records after it (first %d), %v", base, len(rest), rest[0].Recnum, err)
	}
	if !bytes.Equal(Replay(events), Replay(extended)) {
		t.Error("compacted log does not replay to what was extended")
	}
	// A checkpoint anywhere but first is malformed.
	moved := append(bytes.Clone(b[len(events[0].Encode()):]), events[0].Encode()...)
	if _, err := Parse(moved); !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse(checkpoint last) = %v, want ErrMalformed", err)
	}
}
