package rollout

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// wait bounds every wait on an event in these tests; none should come
// near it.
const wait = time.Minute

// fleet is a store with n nodes and a hub carrying their update events;
// each node's behaviour on Update is a script.
type fleet struct {
	t     *testing.T
	db    *store.SQLite
	hub   *hub.Hub
	mu    sync.Mutex
	calls []string // nodes Update was called for, in order
	// flying counts updates between Update and their final event; most
	// is the largest it was.
	flying, most int
	// outcome is what each node does after REBOOTING: "commit", "fail",
	// "hang" (never boots), "forge" (claims COMMITTED without booting),
	// "forge-id" (the same, naming the update's request ID), "fast"
	// (booted and committed before Update returns); "refuse" fails
	// Update itself. Nodes not named commit.
	outcome  map[string]string
	offline  map[string]bool
	onBuild  map[string]string
	block    chan struct{} // if set, Update waits on it
	released chan string
}

func newFleet(t *testing.T, path string, n int) *fleet {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "attest.db")
	}
	db, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for i := range n {
		id := fmt.Sprintf("rig-%02d", i)
		err := db.CreateNode(context.Background(), &store.Node{ID: id, EKFingerprint: "ek-" + id, EKPublic: []byte{1}, AKPublic: []byte{1}, State: apiv1.NodeState_NODE_STATE_TRUSTED})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			t.Fatal(err)
		}
	}
	return &fleet{t: t, db: db, hub: hub.New(db, nil), outcome: map[string]string{}, offline: map[string]bool{}, onBuild: map[string]string{}, released: make(chan string, 100)}
}

func (f *fleet) update(ctx context.Context, r *apiv1.UpdateRequest) (*apiv1.UpdateEvent, error) {
	node := r.GetNodeId()
	f.mu.Lock()
	f.calls = append(f.calls, node)
	f.flying++
	f.most = max(f.most, f.flying)
	out, block := f.outcome[node], f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	id := "req-" + node
	finish := func() {
		f.mu.Lock()
		f.flying--
		f.mu.Unlock()
	}
	if out == "refuse" {
		finish()
		return &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_FAILED, RequestId: id, Reason: "the node refused"}, nil
	}
	e := &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_REBOOTING, Build: r.GetBuild(), RequestId: id}
	f.hub.UpdateEvent(node, e)
	commit := func() {
		f.mu.Lock()
		f.onBuild[node] = r.GetBuild()
		f.flying--
		f.mu.Unlock()
		f.hub.UpdateEvent(node, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_BOOTED, RequestId: id, Build: r.GetBuild(), Reason: "trusted"})
		f.hub.MarkBooted(node, id)
		f.hub.UpdateEvent(node, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: "b"})
	}
	if out == "fast" {
		commit()
		f.released <- node
		return e, nil
	}
	// The node reboots; the verifier's decision and the node's commit
	// come later, on another goroutine, as they do from streams.
	go func() {
		time.Sleep(10 * time.Millisecond) // the reboot
		switch out {
		case "hang":
		case "forge":
			f.hub.UpdateEvent(node, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: "b"})
		case "forge-id":
			f.hub.UpdateEvent(node, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: "b", RequestId: id, Build: r.GetBuild()})
		case "fail":
			finish()
			f.hub.UpdateEvent(node, &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_FAILED, RequestId: id, Build: r.GetBuild(), Reason: "the node came back on build old"})
		default:
			commit()
		}
		f.released <- node
	}()
	return e, nil
}

func (f *fleet) runner(ctx context.Context, bootTimeout time.Duration) *Runner {
	f.t.Helper()
	r, err := New(ctx, Options{
		Store: f.db, Update: f.update, Watch: f.hub.WatchUpdate, Last: f.hub.LastUpdate, Booted: f.hub.Booted,
		Connected: func(node string) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return !f.offline[node]
		},
		OnBuild: func(_ context.Context, node string) (string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.onBuild[node], nil
		},
		BootTimeout: bootTimeout, Tick: 20 * time.Millisecond,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// run runs r until the test ends; the returned function stops it and
// waits for its goroutines.
func run(t *testing.T, r *Runner) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

// until waits for the build's rollout to satisfy ok.
func until(t *testing.T, r *Runner, build string, ok func(*store.Rollout) bool) *store.Rollout {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ro, err := r.Get(build)
		if err == nil && ok(ro) {
			return ro
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout of %s: %+v, %v: not as wanted within %s", build, ro, err, wait)
		}
		time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
	}
}

func inState(s string) func(*store.Rollout) bool {
	return func(ro *store.Rollout) bool { return ro.State == s }
}

func states(ro *store.Rollout) map[string]string {
	m := map[string]string{}
	for _, n := range ro.Nodes {
		m[n.Node] = n.State
	}
	return m
}

// A share of the fleet is updated, never more nodes at once than asked,
// each done only once it committed; raising the share adds nodes and
// keeps the first ones.
func TestRolloutShareParallelAndDone(t *testing.T) {
	f := newFleet(t, "", 10)
	r := f.runner(context.Background(), time.Minute)
	run(t, r)
	ro, err := r.Start(context.Background(), Plan{Build: "b2", Percent: 35, Parallel: 2, MaxFailedPercent: -1})
	if err != nil || len(ro.Nodes) != 4 {
		t.Fatalf("Start(35%% of 10) = %+v, %v; want 4 nodes", ro, err)
	}
	first := slices.Collect(func(yield func(string) bool) {
		for _, n := range ro.Nodes {
			yield(n.Node)
		}
	})
	ro = until(t, r, "b2", inState(Done))
	for node, s := range states(ro) {
		if s != Succeeded {
			t.Errorf("node %s: %s, want done", node, s)
		}
	}
	f.mu.Lock()
	most, calls := f.most, len(f.calls)
	f.mu.Unlock()
	if most > 2 || calls != 4 {
		t.Errorf("%d updates, at most %d at once; want 4, at most 2", calls, most)
	}
	ro, err = r.Start(context.Background(), Plan{Build: "b2", Percent: 100, MaxFailedPercent: -1})
	if err != nil || len(ro.Nodes) != 10 || ro.Parallel != 2 {
		t.Fatalf("Start(100%%) = %+v, %v; want 10 nodes, parallel kept at 2", ro, err)
	}
	for i, n := range first {
		if ro.Nodes[i].Node != n || ro.Nodes[i].State != Succeeded {
			t.Errorf("extending changed node %d: %+v, want %s done", i, ro.Nodes[i], n)
		}
	}
	until(t, r, "b2", inState(Done))
	f.mu.Lock()
	if len(f.calls) != 10 {
		t.Errorf("%d updates after extending to the fleet, want 10", len(f.calls))
	}
	f.mu.Unlock()
	// The same share of the same build picks the same nodes.
	again, _ := New(context.Background(), r.o)
	if got, _ := again.share(context.Background(), "b2", 35); !slices.Equal(got, first) {
		t.Errorf("35%% of the fleet is %v, then %v", first, got)
	}
}

// The rollout halts once more nodes failed than it allows, starts no
// node after that, and resumes only once the failures are retried or
// allowed.
func TestRolloutHaltsAtFailureShare(t *testing.T) {
	f := newFleet(t, "", 10)
	r := f.runner(context.Background(), time.Minute)
	var list []string
	for i := range 10 {
		list = append(list, fmt.Sprintf("rig-%02d", i))
	}
	f.outcome["rig-01"], f.outcome["rig-03"] = "fail", "refuse"
	run(t, r)
	// 10% of 10 nodes: one may fail; the second failure halts it.
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: list, Parallel: 1, MaxFailedPercent: 10}); err != nil {
		t.Fatal(err)
	}
	ro := until(t, r, "b2", inState(Halted))
	s := states(ro)
	if s["rig-00"] != Succeeded || s["rig-01"] != Failed || s["rig-02"] != Succeeded || s["rig-03"] != Failed || s["rig-04"] != Pending {
		t.Fatalf("halted with %v", s)
	}
	// Nothing starts while halted.
	time.Sleep(100 * time.Millisecond) // five ticks in which nothing may happen
	if f.mu.Lock(); len(f.calls) != 4 {
		t.Errorf("%d updates started; a halted rollout started more", len(f.calls))
	}
	f.mu.Unlock()
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Percent: 100, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Errorf("extending a halted rollout: %v, want ErrState", err)
	}
	if _, err := r.Set(context.Background(), "b2", Change{Resume: true, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Errorf("resuming with 2 failed of 1 allowed: %v, want ErrState", err)
	}
	f.mu.Lock()
	delete(f.outcome, "rig-01")
	delete(f.outcome, "rig-03")
	f.mu.Unlock()
	if _, err := r.Set(context.Background(), "b2", Change{Resume: true, RetryFailed: true, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	ro = until(t, r, "b2", inState(Done))
	for node, s := range states(ro) {
		if s != Succeeded {
			t.Errorf("after retrying, node %s: %s", node, s)
		}
	}
}

// A node counts as done only after the verifier found it trusted on the
// build: a COMMITTED the node sends by itself, and a node that never
// comes back, fail at the boot deadline.
func TestRolloutNodeCannotCompleteItself(t *testing.T) {
	f := newFleet(t, "", 3)
	f.outcome["rig-00"], f.outcome["rig-01"], f.outcome["rig-02"] = "forge", "hang", "forge-id"
	r := f.runner(context.Background(), 300*time.Millisecond)
	run(t, r)
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: []string{"rig-00", "rig-01", "rig-02"}, Parallel: 3, MaxFailedPercent: 100}); err != nil {
		t.Fatal(err)
	}
	ro := until(t, r, "b2", inState(Done))
	for _, n := range ro.Nodes {
		if n.State != Failed {
			t.Errorf("node %s: %s (%s), want failed at the boot deadline", n.Node, n.State, n.Reason)
		}
	}
}

// A node whose BOOTED and COMMITTED both came before the rollout looked
// is done: what counts is the verifier's record, not which events the
// rollout happened to receive.
func TestRolloutEventsBeforeWatch(t *testing.T) {
	f := newFleet(t, "", 1)
	f.outcome["rig-00"] = "fast"
	r := f.runner(context.Background(), time.Minute)
	run(t, r)
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: []string{"rig-00"}, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	if ro := until(t, r, "b2", inState(Done)); ro.Nodes[0].State != Succeeded {
		t.Errorf("node booted and committed at once: %+v", ro.Nodes[0])
	}
}

// A node is in one unfinished rollout at a time.
func TestRolloutNodeInOneRollout(t *testing.T) {
	f := newFleet(t, "", 2)
	f.block = make(chan struct{})
	r := f.runner(context.Background(), time.Minute)
	run(t, r)
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: []string{"rig-00"}, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(context.Background(), Plan{Build: "b3", Percent: 100, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Errorf("a second rollout taking rig-00: %v, want ErrState", err)
	}
	if _, err := r.Start(context.Background(), Plan{Build: "b3", Nodes: []string{"rig-01"}, MaxFailedPercent: -1}); err != nil {
		t.Errorf("a second rollout of another node: %v", err)
	}
	close(f.block)
}

// A verifier that restarts while a node reboots into its update follows
// the node without sending the update again: trusted on the build and
// committed, it is done; never trusted on it, it fails at the deadline.
func TestRolloutFollowsRebootAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	f := newFleet(t, path, 2)
	f.outcome["rig-00"], f.outcome["rig-01"] = "hang", "hang"
	r := f.runner(context.Background(), time.Hour)
	stop := run(t, r)
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: []string{"rig-00", "rig-01"}, Parallel: 2, MaxFailedPercent: 100}); err != nil {
		t.Fatal(err)
	}
	until(t, r, "b2", func(ro *store.Rollout) bool {
		s := states(ro)
		return s["rig-00"] == Rebooting && s["rig-01"] == Rebooting
	})
	stop()
	f.db.Close()

	g := newFleet(t, path, 2)
	r2 := g.runner(context.Background(), 500*time.Millisecond)
	run(t, r2)
	g.mu.Lock()
	g.onBuild["rig-00"] = "b2"
	g.mu.Unlock()
	g.hub.UpdateEvent("rig-00", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: "b"})
	ro := until(t, r2, "b2", inState(Done))
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := states(ro); s["rig-00"] != Succeeded || s["rig-01"] != Failed || len(g.calls) != 0 {
		t.Errorf("after a restart during the reboots: %v, updates sent again %v; want rig-00 done, rig-01 failed, none sent", s, g.calls)
	}
}

// A node that is not connected waits without taking a place; pausing
// starts no node; bad plans and changes are refused with what to do.
func TestRolloutOfflinePauseAndBadInput(t *testing.T) {
	f := newFleet(t, "", 3)
	f.offline["rig-00"] = true
	r := f.runner(context.Background(), time.Minute)
	ctx := context.Background()
	for name, p := range map[string]Plan{
		"no build":          {Nodes: []string{"rig-00"}},
		"nodes and percent": {Build: "b2", Nodes: []string{"rig-00"}, Percent: 10},
		"neither":           {Build: "b2"},
		"percent 101":       {Build: "b2", Percent: 101},
		"unknown node":      {Build: "b2", Nodes: []string{"rig-99"}},
		"node twice":        {Build: "b2", Nodes: []string{"rig-01", "rig-01"}},
		"max failed 101":    {Build: "b2", Nodes: []string{"rig-01"}, MaxFailedPercent: 101},
	} {
		if _, err := r.Start(ctx, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Start = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := r.Set(ctx, "b9", Change{Pause: true}); !errors.Is(err, ErrNotFound) {
		t.Errorf("pausing no rollout: %v", err)
	}
	if l := r.List(); len(l) != 0 {
		t.Errorf("refused plans left rollouts: %+v", l)
	}
	f.block = make(chan struct{})
	run(t, r)
	if _, err := r.Start(ctx, Plan{Build: "b2", Nodes: []string{"rig-00", "rig-01", "rig-02"}, Parallel: 1, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	ro := until(t, r, "b2", func(ro *store.Rollout) bool { return states(ro)["rig-01"] == Updating })
	if n := ro.Nodes[0]; n.State != Pending || n.Reason != "waiting for the node to connect" {
		t.Errorf("offline node: %+v", n)
	}
	if _, err := r.Set(ctx, "b2", Change{Pause: true, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Set(ctx, "b2", Change{Pause: true, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Errorf("pausing a paused rollout: %v", err)
	}
	close(f.block)
	until(t, r, "b2", func(ro *store.Rollout) bool { return states(ro)["rig-01"] == Succeeded })
	time.Sleep(100 * time.Millisecond) // ticks in which a paused rollout must start nothing
	if ro, _ := r.Get("b2"); states(ro)["rig-02"] != Pending {
		t.Errorf("paused rollout started a node: %v", states(ro))
	}
	f.mu.Lock()
	f.offline["rig-00"] = false
	f.mu.Unlock()
	if _, err := r.Set(ctx, "b2", Change{Resume: true, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	until(t, r, "b2", inState(Done))
}

// A verifier that stops during a rollout goes on where it stopped: the
// node that was updating is tried again, and counts as done without an
// update if it meanwhile runs the build trusted.
func TestRolloutResumesAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	f := newFleet(t, path, 2)
	f.block = make(chan struct{})
	r := f.runner(context.Background(), time.Minute)
	stop := run(t, r)
	if _, err := r.Start(context.Background(), Plan{Build: "b2", Nodes: []string{"rig-00", "rig-01"}, Parallel: 1, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	until(t, r, "b2", func(ro *store.Rollout) bool { return states(ro)["rig-00"] == Updating })
	stop()
	f.db.Close()

	g := newFleet(t, path, 2)
	g.onBuild["rig-00"] = "b2"
	r2 := g.runner(context.Background(), time.Minute)
	ro, err := r2.Get("b2")
	if err != nil || ro.State != Running || ro.Nodes[0].State != Pending {
		t.Fatalf("after a restart: %+v, %v; want running, rig-00 pending", ro, err)
	}
	run(t, r2)
	ro = until(t, r2, "b2", inState(Done))
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := states(ro); s["rig-00"] != Succeeded || s["rig-01"] != Succeeded || !slices.Equal(g.calls, []string{"rig-01"}) {
		t.Errorf("after a restart: %v, updates %v; want both done, rig-00 without an update", s, g.calls)
	}
}

// BenchmarkRolloutStart starts a rollout to a share of a 10,000-node
// fleet (picking the nodes, storing the rollout) and runs one pass over
// it with every node offline (each marked waiting, once).
func BenchmarkRolloutStart(b *testing.B) {
	dir := b.TempDir()
	db, err := store.OpenSQLite(filepath.Join(dir, "attest.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	const fleet = 10000
	for i := range fleet {
		id := fmt.Sprintf("rig-%05d", i)
		if err := db.CreateNode(ctx, &store.Node{ID: id, EKFingerprint: "ek-" + id, EKPublic: []byte{1}, AKPublic: []byte{1}, State: apiv1.NodeState_NODE_STATE_TRUSTED}); err != nil {
			b.Fatal(err)
		}
	}
	h := hub.New(db, nil)
	r, err := New(ctx, Options{Store: db, Update: func(context.Context, *apiv1.UpdateRequest) (*apiv1.UpdateEvent, error) {
		return nil, errors.New("offline")
	},
		Watch: h.WatchUpdate, Last: h.LastUpdate, Booted: h.Booted, Connected: func(string) bool { return false },
		OnBuild: func(context.Context, string) (string, error) { return "", nil }})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		build := fmt.Sprintf("b%d", i)
		if _, err := r.Start(ctx, Plan{Build: build, Percent: 50, MaxFailedPercent: -1}); err != nil {
			b.Fatal(err)
		}
		r.step(ctx)
		// The next rollout takes the same nodes: this one is done.
		r.mu.Lock()
		r.setState(ctx, r.rollouts[build], Done, "benchmark")
		r.mu.Unlock()
	}
}

// Cancelling a rollout skips the nodes it did not start, which frees
// them for another build's rollout; starting the cancelled one again
// takes them up.
func TestRolloutCancel(t *testing.T) {
	f := newFleet(t, "", 2)
	f.offline["rig-00"] = true
	r := f.runner(context.Background(), time.Minute)
	run(t, r)
	ctx := context.Background()
	if _, err := r.Start(ctx, Plan{Build: "b2", Nodes: []string{"rig-00", "rig-01"}, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	until(t, r, "b2", func(ro *store.Rollout) bool { return states(ro)["rig-01"] == Succeeded })
	if _, err := r.Start(ctx, Plan{Build: "b3", Nodes: []string{"rig-00"}, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Fatalf("b3 taking rig-00, pending in b2: %v, want ErrState", err)
	}
	ro, err := r.Set(ctx, "b2", Change{Cancel: true, MaxFailedPercent: -1})
	if err != nil || ro.State != Done || states(ro)["rig-00"] != Skipped || states(ro)["rig-01"] != Succeeded {
		t.Fatalf("Cancel = %+v, %v", ro, err)
	}
	if _, err := r.Set(ctx, "b2", Change{Cancel: true, MaxFailedPercent: -1}); !errors.Is(err, ErrState) {
		t.Errorf("cancelling a done rollout: %v", err)
	}
	if _, err := r.Set(ctx, "b2", Change{Cancel: true, Pause: true, MaxFailedPercent: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("cancel and pause at once: %v", err)
	}
	if _, err := r.Start(ctx, Plan{Build: "b3", Nodes: []string{"rig-00"}, MaxFailedPercent: -1}); err != nil {
		t.Fatalf("b3 taking rig-00 after b2 was cancelled: %v", err)
	}
	if _, err := r.Set(ctx, "b3", Change{Cancel: true, MaxFailedPercent: -1}); err != nil {
		t.Fatal(err)
	}
	ro, err = r.Start(ctx, Plan{Build: "b2", Percent: 100, MaxFailedPercent: -1})
	if err != nil || states(ro)["rig-00"] != Pending || len(ro.Nodes) != 2 {
		t.Fatalf("starting b2 again = %+v, %v; want rig-00 pending again", ro, err)
	}
}
