package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
		Class: attestation.ClassDev, State: "enrolling", Enrolled: now}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	for _, dup := range []*Node{{ID: "rig-1", EKFingerprint: "ek2", Enrolled: now}, {ID: "rig-2", EKFingerprint: "ek1", Enrolled: now}} {
		dup.EKPublic, dup.AKPublic = []byte{1}, []byte{1}
		if err := s.CreateNode(ctx, dup); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateNode(%s/%s) = %v, want ErrConflict", dup.ID, dup.EKFingerprint, err)
		}
	}
	n.State, n.TrustedUntil, n.Appraisals = "trusted", now.Add(time.Minute), 1
	n.FirmwarePCRs = map[int][]byte{0: {9}}
	n.LastClock = &attestation.Clock{Clock: 5, ResetCount: 1}
	if err := s.SaveVerdict(ctx, n, Verdict{Node: "rig-1", Time: now, State: "trusted", Manifest: "b1"}); err != nil {
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
	moved, err := s.DemoteAll(ctx, "trusted", "suspect", "verifier restarted", now)
	if err != nil || moved != 1 {
		t.Fatalf("DemoteAll() = %d, %v; want 1", moved, err)
	}
	h, err := s.History(ctx, "rig-1", 10)
	if err != nil || len(h) != 2 || h[0].State != "suspect" || h[1].Manifest != "b1" {
		t.Fatalf("History() = %+v, %v", h, err)
	}
	if _, err := s.GetNode(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetNode(nope) = %v, want ErrNotFound", err)
	}
}
