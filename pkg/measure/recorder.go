package measure

import (
	"fmt"
	"os"
	"sync"
)

// Recorder extends runtime events into the TPM and appends them to the
// runtime log file. A TPM extend comes first: an event that is logged but
// not extended would make the log fail to replay, which is the safe way
// round.
type Recorder struct {
	mu     sync.Mutex
	path   string
	extend func(pcr int, digest []byte) error
	next   uint64
}

// NewRecorder returns a Recorder appending to the log at path (created if
// missing; its existing records are counted) and extending with extend.
func NewRecorder(path string, extend func(pcr int, digest []byte) error) (*Recorder, error) {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading runtime log: %w", err)
	}
	events, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("reading runtime log: %w", err)
	}
	return &Recorder{path: path, extend: extend, next: uint64(len(events))}, nil
}

// Record measures one event.
func (r *Recorder) Record(kind string, data []byte) (Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := NewEvent(r.next, kind, data)
	if err := r.extend(e.PCR, e.Digest); err != nil {
		return Event{}, fmt.Errorf("measuring %s event: %w", kind, err)
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return Event{}, fmt.Errorf("opening runtime log: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(e.Encode()); err != nil {
		return Event{}, fmt.Errorf("appending to runtime log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return Event{}, fmt.Errorf("syncing runtime log: %w", err)
	}
	r.next++
	return e, nil
}
