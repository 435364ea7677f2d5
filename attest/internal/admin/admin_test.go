package admin

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

type fixture struct {
	s   *Server
	db  *store.SQLite
	hub *hub.Hub
	now time.Time
}

// newFixture is the Admin service over a store holding rig-1 in state.
func newFixture(t *testing.T, state apiv1.NodeState) *fixture {
	t.Helper()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "attest.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, now: time.Unix(1_800_000_000, 0)}
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	f.hub = hub.New(db, nil)
	k, err := trust.New(ctx, trust.Options{Store: db, SigningKey: key, Manifests: func() []*attestation.Manifest { return nil },
		Now: func() time.Time { return f.now }, Publish: f.hub.Publish})
	if err != nil {
		t.Fatal(err)
	}
	f.s = New(db, k, f.hub)
	// After trust.New, which demotes nodes left trusted by a previous run.
	if err := db.CreateNode(ctx, &store.Node{ID: "rig-1", EKFingerprint: "0123456789abcdef0123", EKPublic: []byte{1}, AKPublic: []byte{1},
		Class: attestation.ClassDev, State: state, TrustedUntil: f.now.Add(time.Minute), Enrolled: f.now}); err != nil {
		t.Fatal(err)
	}
	return f
}

// runStream is the server side of a RunWorkload call, recording what is
// sent.
type runStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*apiv1.WorkloadUpdate
}

func (r *runStream) Context() context.Context { return r.ctx }
func (r *runStream) Send(u *apiv1.WorkloadUpdate) error {
	r.sent = append(r.sent, u)
	return nil
}

func run(f *fixture, r *apiv1.RunWorkloadRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.s.RunWorkload(r, &runStream{ctx: ctx})
}

// Requests that cannot be served are refused with the code a client
// branches on, before anything reaches a node or the store.
func TestRunWorkloadRefusals(t *testing.T) {
	spec := func(id string, trusted bool) *apiv1.WorkloadSpec {
		return &apiv1.WorkloadSpec{Id: id, Image: "r.example/a@sha256:abc", TrustedTier: trusted}
	}
	f := newFixture(t, trust.Trusted)
	for _, c := range []struct {
		name string
		req  *apiv1.RunWorkloadRequest
		code codes.Code
	}{
		{"no spec", &apiv1.RunWorkloadRequest{NodeId: "rig-1"}, codes.InvalidArgument},
		{"bad id", &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: spec("../etc", false)}, codes.InvalidArgument},
		{"archive flag without archive", &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "w", ImageArchive: true}}, codes.InvalidArgument},
		{"archive without flag", &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: spec("w", false), ImageArchive: []byte("tar")}, codes.InvalidArgument},
		{"no image", &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "w"}}, codes.InvalidArgument},
		{"unknown node", &apiv1.RunWorkloadRequest{NodeId: "rig-9", Spec: spec("w", false)}, codes.NotFound},
		{"not connected", &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: spec("w", true)}, codes.Unavailable},
	} {
		if err := run(f, c.req); status.Code(err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	// Connected, trusted in the store, but this stream has not passed an
	// appraisal itself: no trusted-tier work.
	c := f.hub.Attach("rig-1", func() {}, hub.Plan{})
	if err := run(f, &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: spec("w", true)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("unproven stream: %v, want FailedPrecondition", err)
	}
	if len(c.Out()) != 0 {
		t.Errorf("%d messages queued for the node after refusals", len(c.Out()))
	}
	// Trust expired by the clock, though the store still says trusted.
	f.now = f.now.Add(2 * time.Minute)
	c.SetPassed(true)
	if err := run(f, &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: spec("w", true)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("expired trust: %v, want FailedPrecondition", err)
	}
}

// A workload is sent with its archive in chunks and its events relayed
// until it ends.
func TestRunWorkloadRelays(t *testing.T) {
	f := newFixture(t, trust.Trusted)
	c := f.hub.Attach("rig-1", func() {}, hub.Plan{})
	c.SetPassed(true)
	archive := make([]byte, ImageChunkSize+10)
	done := make(chan error, 1)
	st := &runStream{ctx: context.Background()}
	go func() {
		done <- f.s.RunWorkload(&apiv1.RunWorkloadRequest{NodeId: "rig-1", ImageArchive: archive,
			Spec: &apiv1.WorkloadSpec{Id: "job-1", ImageArchive: true, TrustedTier: true}}, st)
	}()
	var chunks int
	for last := false; !last; {
		select {
		case m := <-c.Out():
			if m.GetImageChunk() != nil {
				chunks++
				last = m.GetImageChunk().GetLast()
			}
		case err := <-done:
			t.Fatalf("RunWorkload ended before its archive was sent: %v", err)
		}
	}
	if chunks != 2 {
		t.Errorf("archive of %d bytes came in %d chunks, want 2", len(archive), chunks)
	}
	f.hub.WorkloadUpdate("rig-1", "job-1", &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Event{Event: &apiv1.WorkloadEvent{Id: "job-1", State: apiv1.WorkloadState_WORKLOAD_STATE_EXITED}}})
	select {
	case err := <-done:
		if err != nil || len(st.sent) != 1 {
			t.Errorf("RunWorkload = %v after relaying %d updates; want nil after 1", err, len(st.sent))
		}
	case <-time.After(time.Minute):
		t.Fatal("RunWorkload did not end with its workload")
	}
	ws, err := f.db.WorkloadEvents(context.Background(), "rig-1", 10)
	if err != nil || len(ws) != 1 || ws[0].State != "sent" {
		t.Errorf("stored events %+v, %v; want the one 'sent' record", ws, err)
	}
}

// Operator decisions go through the owner of node state and are visible
// at once.
func TestOperatorDecisions(t *testing.T) {
	f := newFixture(t, trust.Untrusted)
	ctx := context.Background()
	n, err := f.s.AcceptFirmware(ctx, &apiv1.NodeRequest{NodeId: "rig-1"})
	if err != nil || n.GetState() != trust.Suspect {
		t.Fatalf("AcceptFirmware: %v, %v; want suspect", n, err)
	}
	n, err = f.s.Revoke(ctx, &apiv1.RevokeRequest{NodeId: "rig-1", Reason: "stolen"})
	if err != nil || n.GetState() != trust.Untrusted {
		t.Fatalf("Revoke: %v, %v; want untrusted", n, err)
	}
	d, err := f.s.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1", History: 10})
	if err != nil || len(d.GetHistory()) != 2 || d.GetHistory()[0].GetReason() != "revoked by operator: stolen" {
		t.Errorf("GetNode: %v, %v", d, err)
	}
	for _, call := range []func() error{
		func() error { _, err := f.s.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-9"}); return err },
		func() error { _, err := f.s.Revoke(ctx, &apiv1.RevokeRequest{NodeId: "rig-9"}); return err },
		func() error { _, err := f.s.AcceptFirmware(ctx, &apiv1.NodeRequest{NodeId: "rig-9"}); return err },
	} {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("unknown node: %v, want NotFound", err)
		}
	}
}
