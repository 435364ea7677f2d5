package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

func TestSQLiteSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "attest.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_800_000_000_000)
	n := &Node{ID: "rig-1", EKFingerprint: "ek1", EKPublic: []byte{1}, AKPublic: []byte{2},
		Class: attestation.ClassDev, State: st("enrolling"), Enrolled: now}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	for _, dup := range []*Node{{ID: "rig-1", EKFingerprint: "ek2", Enrolled: now}, {ID: "rig-2", EKFingerprint: "ek1", Enrolled: now}} {
		dup.EKPublic, dup.AKPublic = []byte{1}, []byte{1}
		if err := s.CreateNode(ctx, dup); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateNode(%s/%s) = %v, want ErrConflict", dup.ID, dup.EKFingerprint, err)
		}
	}
	n.State, n.TrustedUntil, n.Appraisals = apiv1.NodeState_NODE_STATE_TRUSTED, now.Add(time.Minute), 1
	n.FirmwarePCRs = map[int][]byte{0: {9}}
	n.LastClock = &attestation.Clock{Clock: 5, ResetCount: 1}
	if err := s.SaveVerdict(ctx, n, Verdict{Node: "rig-1", Time: now, State: st("trusted"), Manifest: "b1", Workloads: []string{"w1@sha256:aa", "w2@sha256:bb"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.NodeByEK(ctx, "ek1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(n, got); diff != "" {
		t.Errorf("node after reopen differs (-want +got):\n%s", diff)
	}
	moved, err := s.DemoteAll(ctx, st("trusted"), st("suspect"), "verifier restarted", now)
	if err != nil || moved != 1 {
		t.Fatalf("DemoteAll() = %d, %v; want 1", moved, err)
	}
	h, err := s.History(ctx, "rig-1", 10)
	if err != nil || len(h) != 2 || h[0].State != apiv1.NodeState_NODE_STATE_SUSPECT || h[1].Manifest != "b1" ||
		!cmp.Equal(h[1].Workloads, []string{"w1@sha256:aa", "w2@sha256:bb"}) || h[0].Workloads != nil {
		t.Fatalf("History() = %+v, %v", h, err)
	}
	if _, err := s.GetNode(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetNode(nope) = %v, want ErrNotFound", err)
	}
}

func TestWorkloadEvents(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "attest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.UnixMilli(1_800_000_000_000)
	if err := s.SaveWorkloadEvent(ctx, WorkloadEvent{Node: "ghost", Workload: "w", Time: now, State: "running"}); err == nil {
		t.Error("recorded an event for a node that does not exist")
	}
	if err := s.CreateNode(ctx, &Node{ID: "rig-1", EKFingerprint: "ek1", EKPublic: []byte{1}, AKPublic: []byte{2},
		Class: attestation.ClassDev, State: st("trusted"), Enrolled: now}); err != nil {
		t.Fatal(err)
	}
	want := []WorkloadEvent{
		{Node: "rig-1", Workload: "w", Time: now.Add(time.Second), State: "killed", Reason: "node demoted: missed deadline", ExitCode: 137},
		{Node: "rig-1", Workload: "w", Time: now, State: "running", ImageDigest: "sha256:aa"},
	}
	for i := len(want) - 1; i >= 0; i-- {
		if err := s.SaveWorkloadEvent(ctx, want[i]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.WorkloadEvents(ctx, "rig-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("workload events (-want +got):\n%s", diff)
	}
}

// A database from before GPU pinning gains the column and keeps its nodes.
func TestMigratesOlderDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE nodes (id TEXT PRIMARY KEY, ek_fingerprint TEXT NOT NULL UNIQUE, ek_public BLOB NOT NULL,
		ak_public BLOB NOT NULL, class TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
		trusted_until INTEGER NOT NULL DEFAULT 0, enrolled INTEGER NOT NULL, last_verdict INTEGER NOT NULL DEFAULT 0,
		appraisals INTEGER NOT NULL DEFAULT 0, firmware_pcrs TEXT, repin_firmware INTEGER NOT NULL DEFAULT 0,
		revoked INTEGER NOT NULL DEFAULT 0, last_clock TEXT);
		INSERT INTO nodes (id, ek_fingerprint, ek_public, ak_public, class, state, enrolled) VALUES ('rig-1', 'ek1', x'01', x'02', 'dev', 'trusted', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := s.GetNode(context.Background(), "rig-1")
	if err != nil || n.State != apiv1.NodeState_NODE_STATE_TRUSTED || n.GPUDigest != "" {
		t.Fatalf("node after upgrade = %+v, %v", n, err)
	}
	n.GPUDigest = "none"
	if err := s.SaveVerdict(context.Background(), n, Verdict{Node: "rig-1", Time: time.Now(), State: st("trusted")}); err != nil {
		t.Fatal(err)
	}
	if n, _ = s.GetNode(context.Background(), "rig-1"); n.GPUDigest != "none" {
		t.Errorf("GPU digest not kept: %q", n.GPUDigest)
	}
}

func st(text string) apiv1.NodeState {
	s, err := ParseState(text)
	if err != nil {
		panic(err)
	}
	return s
}

// Every state the API defines round-trips through its stored text; a
// stored state nobody knows is an error, not a silent "unspecified".
func TestStateText(t *testing.T) {
	for v := range apiv1.NodeState_name {
		s := apiv1.NodeState(v)
		if s == apiv1.NodeState_NODE_STATE_UNSPECIFIED {
			continue
		}
		if got, err := ParseState(StateText(s)); err != nil || got != s {
			t.Errorf("ParseState(StateText(%v)) = %v, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "unspecified", "TRUSTED ", "pending"} {
		if _, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) = nil error", bad)
		}
	}
}
