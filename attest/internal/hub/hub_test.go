package hub

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

func newHub(t *testing.T) (*Hub, *store.SQLite) {
	t.Helper()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "attest.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return New(db, nil), db
}

func msg(id uint64) *apiv1.VerifierMessage {
	return &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Challenge{Challenge: &apiv1.Challenge{Id: id}}}
}

// A node has one stream: the newest proven one replaces (and cancels)
// the one before, and the old one's end does not disconnect the node.
func TestAttachReplaces(t *testing.T) {
	h, _ := newHub(t)
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := h.Attach("rig-1", cancel1, Plan{Plan: "p1"})
	second := h.Attach("rig-1", func() {}, Plan{Err: "bad plan"})
	if ctx1.Err() == nil {
		t.Error("the replaced stream was not cancelled")
	}
	if h.Conn("rig-1") != second || h.Plan("rig-1").Err != "bad plan" {
		t.Errorf("Conn = %p (want the newest, %p), plan %+v", h.Conn("rig-1"), second, h.Plan("rig-1"))
	}
	if h.Detach("rig-1", first) {
		t.Error("detaching the replaced stream reported the node gone")
	}
	if !h.Connected("rig-1") {
		t.Error("node disconnected by its old stream's end")
	}
	select {
	case <-first.Gone():
	default:
		t.Error("old stream's Gone not closed")
	}
	h.SetGPUs("rig-1", &apiv1.GPUReport{InventoryDigest: "x"})
	if !h.Detach("rig-1", second) || h.Connected("rig-1") || h.GPUs("rig-1") != nil {
		t.Error("detaching the current stream left the node connected or its GPU report kept")
	}
}

// Push never waits: a full queue or an absent node drops the message.
// Send waits for room and fails once the stream is gone.
func TestPushAndSend(t *testing.T) {
	h, _ := newHub(t)
	if h.Push("nobody", msg(1)) {
		t.Error("Push to an absent node reported success")
	}
	if err := h.Send(context.Background(), "nobody", msg(1)); status.Code(err) != codes.Unavailable {
		t.Errorf("Send to an absent node: %v, want Unavailable", err)
	}
	c := h.Attach("rig-1", func() {}, Plan{})
	for i := range QueueLength {
		if !h.Push("rig-1", msg(uint64(i))) {
			t.Fatalf("Push %d into a queue of %d failed", i, QueueLength)
		}
	}
	if h.Push("rig-1", msg(999)) {
		t.Error("Push into a full queue reported success")
	}
	errc := make(chan error, 1)
	go func() { errc <- h.Send(context.Background(), "rig-1", msg(1000)) }()
	if m := <-c.Out(); m.GetChallenge().GetId() != 0 {
		t.Errorf("first queued message %v, want challenge 0", m)
	}
	if err := <-errc; err != nil {
		t.Errorf("Send with room: %v", err)
	}
	h.Detach("rig-1", c)
	for len(c.out) < QueueLength { // fill it again, then Send must fail on Gone
		c.out <- msg(0)
	}
	if err := c.Send(context.Background(), "rig-1", msg(1)); status.Code(err) != codes.Unavailable {
		t.Errorf("Send on an ended stream: %v, want Unavailable", err)
	}
}

// Subscribers get the changes in order while they have room; a slow
// one loses changes instead of stalling the publisher; cancel stops
// delivery.
func TestSubscribe(t *testing.T) {
	h, _ := newHub(t)
	a, cancelA := h.Subscribe()
	b, cancelB := h.Subscribe()
	defer cancelB()
	n := cap(a) + 100
	done := make(chan struct{})
	go func() { // nobody reads: Publish must still return every time
		for i := range n {
			h.Publish(&apiv1.StateChange{NodeId: "rig-1", UnixMs: int64(i)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Publish stalled on subscribers that do not read")
	}
	if len(a) != cap(a) || len(b) != cap(b) {
		t.Errorf("subscribers hold %d and %d, want their full buffers of %d (the rest dropped)", len(a), len(b), cap(a))
	}
	for i := range cap(a) {
		if c := <-a; c.GetUnixMs() != int64(i) {
			t.Fatalf("change %d is %d: out of order", i, c.GetUnixMs())
		}
	}
	cancelA()
	h.Publish(&apiv1.StateChange{NodeId: "rig-2"})
	select {
	case c := <-a:
		t.Errorf("cancelled subscriber got %v", c)
	default:
	}
}

// Workload updates reach that workload's watchers only.
func TestWatchWorkload(t *testing.T) {
	h, _ := newHub(t)
	a, stopA := h.WatchWorkload("rig-1", "job-a")
	b, stopB := h.WatchWorkload("rig-1", "job-b")
	defer stopB()
	u := &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Log{Log: &apiv1.WorkloadLog{Id: "job-a", Data: []byte("hi")}}}
	h.WorkloadUpdate("rig-1", "job-a", u)
	h.WorkloadUpdate("rig-2", "job-a", u) // another node's job-a
	if len(a) != 1 || len(b) != 0 {
		t.Errorf("job-a watcher has %d updates (want 1), job-b %d (want 0)", len(a), len(b))
	}
	stopA()
	h.mu.Lock()
	_, kept := h.workloads[workloadKey{"rig-1", "job-a"}]
	h.mu.Unlock()
	if kept {
		t.Error("a workload with no watchers left is still registered")
	}
}

// The event gate takes events only for workloads sent to that node, at
// most MaxWorkloadEvents each, remembers across a restart through the
// store, and forgets ended workloads' counters.
func TestEventGate(t *testing.T) {
	h, db := newHub(t)
	ctx := context.Background()
	for _, id := range []string{"rig-1", "rig-2"} {
		if err := db.CreateNode(ctx, &store.Node{ID: id, EKFingerprint: "ek-" + id, EKPublic: []byte{1}, AKPublic: []byte{1}, State: apiv1.NodeState_NODE_STATE_TRUSTED}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := h.TakeEvent(ctx, "rig-1", "never-sent"); ok || err != nil {
		t.Fatalf("TakeEvent(never sent) = %v, %v; want false", ok, err)
	}
	if err := h.SentWorkload(ctx, "rig-1", "job-1", store.WorkloadEvent{Time: time.Now(), Reason: "sent"}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.TakeEvent(ctx, "rig-2", "job-1"); ok {
		t.Error("another node's event for job-1 was taken")
	}
	taken := 0
	for range 3 * MaxWorkloadEvents {
		if ok, err := h.TakeEvent(ctx, "rig-1", "job-1"); err != nil {
			t.Fatal(err)
		} else if ok {
			taken++
		}
	}
	if taken != MaxWorkloadEvents-1 { // the "sent" record counts as one
		t.Errorf("took %d events, want %d", taken, MaxWorkloadEvents-1)
	}
	h.ForgetSent("rig-1", "job-1")
	if h.Counting() != 0 {
		t.Errorf("%d nodes still counted after the workload ended", h.Counting())
	}
	// A restarted verifier (a new hub) knows job-2 was sent from the store.
	if err := h.SentWorkload(ctx, "rig-1", "job-2", store.WorkloadEvent{Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if ok, err := New(db, nil).TakeEvent(ctx, "rig-1", "job-2"); !ok || err != nil {
		t.Errorf("after a restart TakeEvent(job-2) = %v, %v; want true", ok, err)
	}
}
