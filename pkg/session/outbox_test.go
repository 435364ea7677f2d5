package session

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

func msg(id string) *apiv1.AgentMessage {
	return &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadEvent{WorkloadEvent: &apiv1.WorkloadEvent{Id: id}}}
}

type sink struct {
	mu   sync.Mutex
	ids  []string
	fail bool
}

func (s *sink) send(m *apiv1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("stream broken")
	}
	s.ids = append(s.ids, m.GetWorkloadEvent().GetId())
	return nil
}

func (s *sink) got() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.ids)
}

// While detached, Send drops and Deliver keeps, in order, for the next
// session; a failing stream keeps what Deliver gave it.
func TestOutboxKeepsWhatMustArrive(t *testing.T) {
	o := NewOutbox(nil)
	o.Send(msg("dropped"))
	o.Deliver(msg("final-1"))
	o.Deliver(msg("final-2"))
	s := &sink{fail: true}
	o.Attach(s.send)
	o.Send(msg("dropped-too"))
	o.Deliver(msg("final-3"))
	if got, want := o.Pending(), 3; got != want {
		t.Fatalf("Pending() on a failing stream = %d, want %d", got, want)
	}
	o.Attach(nil)
	s = &sink{}
	o.Attach(s.send)
	o.Send(msg("live"))
	if got, want := s.got(), "[final-1 final-2 final-3 live]"; got != want {
		t.Errorf("sent %s, want %s", got, want)
	}
	if o.Pending() != 0 {
		t.Errorf("Pending() after delivery = %d, want 0", o.Pending())
	}
}

// The outbox keeps at most MaxPending messages, dropping the oldest.
func TestOutboxBounded(t *testing.T) {
	o := NewOutbox(nil)
	for i := range MaxPending + 2 {
		o.Deliver(msg(fmt.Sprint(i)))
	}
	if got := o.Pending(); got != MaxPending {
		t.Fatalf("Pending() = %d, want %d", got, MaxPending)
	}
	s := &sink{}
	o.Attach(s.send)
	if s.ids[0] != "2" || s.ids[len(s.ids)-1] != fmt.Sprint(MaxPending+1) {
		t.Errorf("delivered %s ... %s, want 2 ... %d (the oldest dropped)", s.ids[0], s.ids[len(s.ids)-1], MaxPending+1)
	}
}

// OnDetach runs before Attach(nil) returns; OnAttach runs on every
// session that attaches.
func TestOutboxHooks(t *testing.T) {
	o := NewOutbox(nil)
	detached := 0
	o.OnDetach(func() { detached++ })
	attached := make(chan struct{}, 2)
	o.OnAttach(func() { attached <- struct{}{} })
	s := &sink{}
	for i := range 2 {
		o.Attach(s.send)
		select {
		case <-attached:
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: OnAttach did not run within 10s", i)
		}
		o.Attach(nil)
		if detached != i+1 {
			t.Fatalf("after detach %d: OnDetach ran %d times", i+1, detached)
		}
	}
}
