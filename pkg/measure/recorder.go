package measure

import (
	"errors"
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
	next   uint64 // the next record number
	size   int64  // bytes in the log
	count  int    // records in the log
}

// ErrLogFull is wrapped when a workload event would eat into the room the
// runtime log keeps for the node's own measurements (see
// WorkloadReserveEvents): the node takes new workloads again after a
// reboot, which starts a new log.
var ErrLogFull = errors.New("runtime log full until the next reboot")

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
	return &Recorder{path: path, extend: extend, next: next(events), size: int64(len(b)), count: len(events)}, nil
}

// Record measures one event.
func (r *Recorder) Record(kind string, data []byte) (Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := NewEvent(r.next, kind, data)
	enc := e.Encode()
	room, events := int64(MaxLogBytes), MaxEvents
	if kind == KindWorkload {
		if len(data) > MaxWorkloadData {
			return Event{}, fmt.Errorf("workload event of %d bytes exceeds %d", len(data), MaxWorkloadData)
		}
		room, events = MaxLogBytes-WorkloadReserveBytes, MaxEvents-WorkloadReserveEvents
	}
	if r.size+int64(len(enc)) > room || r.count+1 > events {
		return Event{}, fmt.Errorf("measuring %s event: %w (%d events, %d bytes)", kind, ErrLogFull, r.count, r.size)
	}
	if err := r.extend(e.PCR, e.Digest); err != nil {
		return Event{}, fmt.Errorf("measuring %s event: %w", kind, err)
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return Event{}, fmt.Errorf("opening runtime log: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(enc); err != nil {
		return Event{}, fmt.Errorf("appending to runtime log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return Event{}, fmt.Errorf("syncing runtime log: %w", err)
	}
	r.next++
	r.count++
	r.size += int64(len(enc))
	return e, nil
}
