package hub

import (
	"context"

	"github.com/rigos/rigos/attest/internal/store"
)

// MaxWorkloadEvents bounds the events stored for one workload (a
// workload reports a handful: preparing, running, then how it ended).
const MaxWorkloadEvents = 16

// SentWorkload records that workload id was sent to node: its events
// will be taken.
func (h *Hub) SentWorkload(ctx context.Context, node, id string, ev store.WorkloadEvent) error {
	ev.Node, ev.Workload, ev.State = node, id, "sent"
	if err := h.store.SaveWorkloadEvent(ctx, ev); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sent[node] == nil {
		h.sent[node] = map[string]int{}
	}
	h.sent[node][id] = 1
	return nil
}

// TakeEvent reports whether an event for workload id from node is to be
// stored: the workload was sent to that node (now, or before a verifier
// restart, as the store says) and has not used up MaxWorkloadEvents.
func (h *Hub) TakeEvent(ctx context.Context, node, id string) (bool, error) {
	h.mu.Lock()
	n, ok := h.sent[node][id]
	h.mu.Unlock()
	if !ok {
		c, err := h.store.WorkloadEventCount(ctx, node, id)
		if err != nil || c == 0 {
			return false, err
		}
		n = c
	}
	if n >= MaxWorkloadEvents {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sent[node] == nil {
		h.sent[node] = map[string]int{}
	}
	h.sent[node][id] = n + 1
	return true, nil
}

// ForgetSent drops the in-memory event counter of an ended workload
// (later events are counted from the store).
func (h *Hub) ForgetSent(node, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sent[node], id)
	if len(h.sent[node]) == 0 {
		delete(h.sent, node)
	}
}

// Counting returns how many nodes hold in-memory event counters.
func (h *Hub) Counting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sent)
}
