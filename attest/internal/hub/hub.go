// Package hub is the verifier's switchboard, in memory: the one proven
// stream of each connected node and its outgoing queue, the subscribers
// to state changes and to workloads' updates, the latest GPU report and
// ASK plan each node sent, and the gate that takes workload events only
// for workloads sent to a node. It decides nothing about trust (package
// trust does) and speaks no gRPC (the services do).
package hub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// QueueLength is how many messages wait for a node's stream.
const QueueLength = 64

// Conn is a node's attached stream, seen from outside its session loop.
type Conn struct {
	cancel context.CancelFunc
	// passed is whether this stream's latest appraisal passed: trusted-tier
	// workloads go only to a stream that has itself proven the boot, not
	// to one that merely holds the node's keys.
	passed atomic.Bool
	out    chan *apiv1.VerifierMessage
	gone   chan struct{}
}

// Passed reports whether the stream's latest appraisal passed.
func (c *Conn) Passed() bool { return c.passed.Load() }

// SetPassed records the outcome of the stream's latest appraisal.
func (c *Conn) SetPassed(ok bool) { c.passed.Store(ok) }

// Out is the queue the session loop sends down the stream.
func (c *Conn) Out() <-chan *apiv1.VerifierMessage { return c.out }

// Gone is closed when the session has ended.
func (c *Conn) Gone() <-chan struct{} { return c.gone }

// Send queues a message on this stream, waiting for room; it fails once
// the stream has ended, whatever replaced it.
func (c *Conn) Send(ctx context.Context, node string, m *apiv1.VerifierMessage) error {
	select {
	case c.out <- m:
		return nil
	case <-c.gone:
		return status.Errorf(codes.Unavailable, "node %s disconnected", node)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Plan is what a node reported in its proven hello: its ASK plan, or why
// the plan is unusable, and its hardware inventory (the node's own claim,
// not attested; nil when it sent none).
type Plan struct {
	Plan, Err string
	Hardware  *apiv1.HardwareInventory
}

type workloadKey struct{ node, id string }

// Hub is the switchboard. Its zero value is not usable; call New.
type Hub struct {
	store store.Store
	log   *slog.Logger

	mu       sync.Mutex
	conns    map[string]*Conn
	watchers map[chan *apiv1.StateChange]struct{}
	// workloads are the watchers of workloads' updates.
	workloads map[workloadKey][]chan *apiv1.WorkloadUpdate
	gpus      map[string]*apiv1.GPUReport // latest per node
	plans     map[string]Plan             // from each node's latest proven hello
	installs  nodeEvents[*apiv1.InstallEvent]
	updates   nodeEvents[*apiv1.UpdateEvent]
	issued    map[string]string // node → its latest update's request ID
	booted    map[string]string // node → the request ID of its latest update the verifier found BOOTED
	// sent counts, per node and workload sent to it, the events the node
	// reported: only those workloads' events are taken, and only so many.
	sent map[string]map[string]int
}

// New creates a Hub. The store backs the workload-event gate across
// verifier restarts.
func New(st store.Store, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		store: st, log: log,
		conns: map[string]*Conn{}, watchers: map[chan *apiv1.StateChange]struct{}{},
		workloads: map[workloadKey][]chan *apiv1.WorkloadUpdate{}, gpus: map[string]*apiv1.GPUReport{},
		plans: map[string]Plan{}, sent: map[string]map[string]int{},
	}
}

// Attach makes a proven stream the node's one stream: the newest proven
// one wins and the one it replaces is cancelled.
func (h *Hub) Attach(id string, cancel context.CancelFunc, plan Plan) *Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.conns[id]; ok {
		old.cancel()
	}
	c := &Conn{cancel: cancel, out: make(chan *apiv1.VerifierMessage, QueueLength), gone: make(chan struct{})}
	h.conns[id] = c
	h.plans[id] = plan
	if plan.Err != "" {
		h.log.Warn("node's ASK plan unusable: it takes no workloads", "node", id, "err", plan.Err)
	}
	return c
}

// Detach ends c. It reports whether c was still the node's stream (and
// the node is therefore now disconnected).
func (h *Hub) Detach(id string, c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	mine := h.conns[id] == c
	if mine {
		delete(h.conns, id)
		delete(h.gpus, id)
	}
	close(c.gone)
	return mine
}

// Conn returns the node's attached stream, or nil.
func (h *Hub) Conn(id string) *Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[id]
}

// Connected reports whether the node has an attached stream.
func (h *Hub) Connected(id string) bool { return h.Conn(id) != nil }

// Push queues a message for a connected node without waiting; it reports
// false when the node is not connected or its queue is full.
func (h *Hub) Push(id string, m *apiv1.VerifierMessage) bool {
	c := h.Conn(id)
	if c == nil {
		return false
	}
	select {
	case c.out <- m:
		return true
	default:
		h.log.Warn("node queue full; message dropped", "node", id)
		return false
	}
}

// Send queues a message for a connected node, waiting for room.
func (h *Hub) Send(ctx context.Context, id string, m *apiv1.VerifierMessage) error {
	c := h.Conn(id)
	if c == nil {
		return status.Errorf(codes.Unavailable, "node %s is not connected", id)
	}
	return c.Send(ctx, id, m)
}

// Subscribe registers for every verdict and state change. Slow
// subscribers miss changes rather than stall verdicts. Call cancel when
// done.
func (h *Hub) Subscribe() (<-chan *apiv1.StateChange, func()) {
	ch := make(chan *apiv1.StateChange, 1024)
	h.mu.Lock()
	h.watchers[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers, ch)
		h.mu.Unlock()
	}
}

// Publish passes a state change to every subscriber that has room.
func (h *Hub) Publish(c *apiv1.StateChange) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		select {
		case w <- c:
		default: // a slow watcher misses changes rather than stalling verdicts
		}
	}
}

// WatchWorkload subscribes to a workload's updates from its node.
func (h *Hub) WatchWorkload(node, id string) (<-chan *apiv1.WorkloadUpdate, func()) {
	ch := make(chan *apiv1.WorkloadUpdate, 256)
	k := workloadKey{node, id}
	h.mu.Lock()
	h.workloads[k] = append(h.workloads[k], ch)
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		subs := h.workloads[k]
		for i, c := range subs {
			if c == ch {
				subs = append(subs[:i], subs[i+1:]...)
				break
			}
		}
		if len(subs) == 0 {
			delete(h.workloads, k)
		} else {
			h.workloads[k] = subs
		}
	}
}

// WorkloadUpdate passes an update to the workload's watchers that have
// room: a slow watcher loses output, never the node's session.
func (h *Hub) WorkloadUpdate(node, id string, u *apiv1.WorkloadUpdate) {
	h.mu.Lock()
	subs := append([]chan *apiv1.WorkloadUpdate(nil), h.workloads[workloadKey{node, id}]...)
	h.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- u:
		default:
		}
	}
}

// SetGPUs keeps a node's latest GPU report and returns the one before.
func (h *Hub) SetGPUs(node string, r *apiv1.GPUReport) *apiv1.GPUReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.gpus[node]
	h.gpus[node] = r
	return prev
}

// GPUs returns a node's latest GPU report, or nil.
func (h *Hub) GPUs(node string) *apiv1.GPUReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gpus[node]
}

// Plan returns the ASK plan and hardware inventory from the node's latest
// proven hello.
func (h *Hub) Plan(node string) Plan {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.plans[node]
}
