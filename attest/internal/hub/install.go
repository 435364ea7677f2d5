package hub

import "github.com/rigos/rigos/pkg/api/apiv1"

// installState is a node's install: its latest event and the admin calls
// waiting for the next.
type installState struct {
	last     *apiv1.InstallEvent
	watchers []chan *apiv1.InstallEvent
}

// WatchInstall subscribes to a node's install events.
func (h *Hub) WatchInstall(node string) (<-chan *apiv1.InstallEvent, func()) {
	ch := make(chan *apiv1.InstallEvent, 16)
	h.mu.Lock()
	st := h.install(node)
	st.watchers = append(st.watchers, ch)
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		st := h.install(node)
		for i, c := range st.watchers {
			if c == ch {
				st.watchers = append(st.watchers[:i], st.watchers[i+1:]...)
				break
			}
		}
	}
}

// install returns node's install state, made on first use; h.mu is held.
func (h *Hub) install(node string) *installState {
	if h.installs == nil {
		h.installs = map[string]*installState{}
	}
	st := h.installs[node]
	if st == nil {
		st = &installState{}
		h.installs[node] = st
	}
	return st
}

// InstallEvent keeps a node's latest install event and passes it to the
// watchers that have room.
func (h *Hub) InstallEvent(node string, e *apiv1.InstallEvent) {
	h.mu.Lock()
	st := h.install(node)
	st.last = e
	subs := append([]chan *apiv1.InstallEvent(nil), st.watchers...)
	h.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// LastInstall returns a node's latest install event, or nil.
func (h *Hub) LastInstall(node string) *apiv1.InstallEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st := h.installs[node]; st != nil {
		return st.last
	}
	return nil
}
