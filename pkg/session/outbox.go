package session

import (
	"log/slog"
	"sync"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// MaxPending bounds the messages an Outbox keeps for the next session
// (Deliver); past it the oldest is dropped.
const MaxPending = 1024

// Outbox carries the agent's own messages (workload events and output,
// GPU reports) to the verifier on whichever session is live: Run
// attaches it when the node is enrolled and detaches it when the stream
// ends. It is the one writer to the stream besides Run itself, and safe
// for concurrent use.
//
// Messages sent while no session is attached follow two rules: Send
// drops them (reports the next one replaces: output, progress, GPU
// health); Deliver keeps them, in order, for the next session, up to
// MaxPending (a workload's final event).
type Outbox struct {
	log *slog.Logger

	mu       sync.Mutex
	send     func(*apiv1.AgentMessage) error
	pending  []*apiv1.AgentMessage
	dropped  int
	onAttach []func()
	onDetach []func()
}

// NewOutbox returns a detached outbox; log (nil: discard) notes dropped
// messages.
func NewOutbox(log *slog.Logger) *Outbox {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Outbox{log: log}
}

// OnAttach registers f to run, in a goroutine of its own, each time a
// session attaches (a GPU report on every new session).
func (o *Outbox) OnAttach(f func()) {
	o.mu.Lock()
	o.onAttach = append(o.onAttach, f)
	o.mu.Unlock()
}

// OnDetach registers f to run each time the session ends, before Attach
// returns (the workload manager times its grace period from it).
func (o *Outbox) OnDetach(f func()) {
	o.mu.Lock()
	o.onDetach = append(o.onDetach, f)
	o.mu.Unlock()
}

// Attach gives the outbox the live session's sender (safe for concurrent
// use); messages kept for it are sent now. Attach(nil) detaches.
func (o *Outbox) Attach(send func(*apiv1.AgentMessage) error) {
	o.mu.Lock()
	o.send = send
	pending, dropped := o.pending, o.dropped
	o.pending, o.dropped = nil, 0
	hooks := o.onAttach
	if send == nil {
		hooks = o.onDetach
	}
	o.mu.Unlock()
	if send == nil {
		for _, f := range hooks {
			f()
		}
	}
	if dropped > 0 {
		o.log.Warn("messages for the verifier dropped while disconnected", "dropped", dropped, "kept", len(pending))
	}
	for _, m := range pending {
		o.deliver(m, true)
	}
	if send != nil {
		for _, f := range hooks {
			go f()
		}
	}
}

// Send sends msg on the live session; without one, or when sending
// fails, msg is dropped.
func (o *Outbox) Send(msg *apiv1.AgentMessage) { o.deliver(msg, false) }

// Deliver sends msg on the live session; without one, or when sending
// fails, msg is kept for the next session (the oldest kept is dropped
// past MaxPending).
func (o *Outbox) Deliver(msg *apiv1.AgentMessage) { o.deliver(msg, true) }

func (o *Outbox) deliver(msg *apiv1.AgentMessage, keep bool) {
	o.mu.Lock()
	send := o.send
	o.mu.Unlock()
	if send != nil && send(msg) == nil {
		return
	}
	if !keep {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) >= MaxPending {
		o.pending = o.pending[1:]
		o.dropped++
	}
	o.pending = append(o.pending, msg)
}

// Pending returns how many messages wait for the next session.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}
