package hub

import "github.com/rigos/rigos/pkg/api/apiv1"

// nodeEvents are, per node, the latest event of one kind (installs,
// updates) and the admin calls waiting for the next.
type nodeEvents[T any] map[string]*eventState[T]

type eventState[T any] struct {
	last     T
	watchers []chan T
}

// state returns node's state, made on first use; h.mu is held.
func (m *nodeEvents[T]) state(node string) *eventState[T] {
	if *m == nil {
		*m = nodeEvents[T]{}
	}
	st := (*m)[node]
	if st == nil {
		st = &eventState[T]{}
		(*m)[node] = st
	}
	return st
}

func watch[T any](h *Hub, m *nodeEvents[T], node string) (<-chan T, func()) {
	ch := make(chan T, 16)
	h.mu.Lock()
	st := m.state(node)
	st.watchers = append(st.watchers, ch)
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		st := m.state(node)
		for i, c := range st.watchers {
			if c == ch {
				st.watchers = append(st.watchers[:i], st.watchers[i+1:]...)
				break
			}
		}
	}
}

// publish keeps e as node's latest and passes it to the watchers that
// have room.
func publish[T any](h *Hub, m *nodeEvents[T], node string, e T) {
	h.mu.Lock()
	st := m.state(node)
	st.last = e
	subs := append([]chan T(nil), st.watchers...)
	h.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func last[T any](h *Hub, m *nodeEvents[T], node string) T {
	h.mu.Lock()
	defer h.mu.Unlock()
	var zero T
	if st := (*m)[node]; st != nil {
		return st.last
	}
	return zero
}

// WatchInstall subscribes to a node's install events.
func (h *Hub) WatchInstall(node string) (<-chan *apiv1.InstallEvent, func()) {
	return watch(h, &h.installs, node)
}

// InstallEvent keeps a node's latest install event and passes it to the
// watchers that have room.
func (h *Hub) InstallEvent(node string, e *apiv1.InstallEvent) { publish(h, &h.installs, node, e) }

// LastInstall returns a node's latest install event, or nil.
func (h *Hub) LastInstall(node string) *apiv1.InstallEvent { return last(h, &h.installs, node) }

// WatchUpdate subscribes to a node's update events.
func (h *Hub) WatchUpdate(node string) (<-chan *apiv1.UpdateEvent, func()) {
	return watch(h, &h.updates, node)
}

// UpdateEvent keeps a node's latest update event and passes it to the
// watchers that have room.
func (h *Hub) UpdateEvent(node string, e *apiv1.UpdateEvent) { publish(h, &h.updates, node, e) }

// LastUpdate returns a node's latest update event, or nil.
func (h *Hub) LastUpdate(node string) *apiv1.UpdateEvent { return last(h, &h.updates, node) }

// IssueUpdate records that this verifier asked node for the update with
// request ID id (admin Update); IssuedUpdate tells.
func (h *Hub) IssueUpdate(node, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.issued == nil {
		h.issued = map[string]string{}
	}
	h.issued[node] = id
}

// IssuedUpdate reports whether id is the latest update request this
// verifier sent node.
func (h *Hub) IssuedUpdate(node, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return id != "" && h.issued[node] == id
}

// MarkBooted records that the verifier found node trusted on the build
// of its update with request ID id (BOOTED); Booted returns the latest
// such ID. Only the verifier's own appraisal calls it, never a node's
// message.
func (h *Hub) MarkBooted(node, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.booted == nil {
		h.booted = map[string]string{}
	}
	h.booted[node] = id
}

// Booted returns the request ID of node's latest update the verifier
// found BOOTED, or "".
func (h *Hub) Booted(node string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.booted[node]
}
