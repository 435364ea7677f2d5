package measure

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// KindCheckpoint is a runtime log's first record when the log has been
// compacted: it stands for the Events records before it, whose replay
// left RuntimePCR at PCR. It is never extended into the TPM. Only the
// verifier issues checkpoints (after a passing appraisal of exactly those
// records, in this boot), and it accepts a log that starts with one only
// if it issued that very checkpoint to this node: the node cannot invent
// one, and every record after it must still replay to the quoted PCR.
const KindCheckpoint = "checkpoint"

// Checkpoint is a checkpoint record's data.
type Checkpoint struct {
	// Boot is the TPM's resetCount when the checkpoint was issued: a
	// checkpoint is good for one boot only.
	Boot uint32 `json:"boot"`
	// Events is how many records the checkpoint stands for.
	Events uint64 `json:"events"`
	// PCR is RuntimePCR after those records (hex).
	PCR string `json:"pcr"`
	// GPU is the GPU inventory digest those records measured last
	// ("none" if none).
	GPU string `json:"gpu"`
}

// Encode returns the checkpoint record's data.
func (c Checkpoint) Encode() []byte {
	b, _ := json.Marshal(c) // numbers and strings always marshal
	return b
}

// DecodeCheckpoint parses a checkpoint record's data strictly.
func DecodeCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("checkpoint: %w", err)
	}
	if p, err := hex.DecodeString(c.PCR); err != nil || len(p) != sha256.Size || c.Events == 0 {
		return c, errors.New("checkpoint: want a hex SHA-256 PCR value and at least one event")
	}
	return c, nil
}

// Base returns the checkpoint a log starts with, if it does, and the
// records after it.
func Base(events []Event) (*Checkpoint, []Event, error) {
	if len(events) == 0 || events[0].Kind != KindCheckpoint {
		return nil, events, nil
	}
	c, err := DecodeCheckpoint(events[0].Data)
	if err != nil {
		return nil, nil, err
	}
	return &c, events[1:], nil
}

// ErrNotCovered means a checkpoint stands for records the log no longer
// (or never) had.
var ErrNotCovered = errors.New("checkpoint does not match the log")

// Compact rewrites the log at path so that it starts with the checkpoint
// c (data exactly as the verifier issued it) in place of the records it
// stands for, keeping every later record. The rewrite is atomic (a new
// file renamed over the old). It checks that replaying the records c
// stands for gives c.PCR; otherwise it changes nothing.
func (r *Recorder) Compact(cpData []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := DecodeCheckpoint(cpData)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(r.path)
	if err != nil {
		return fmt.Errorf("reading runtime log: %w", err)
	}
	events, err := Parse(b)
	if err != nil {
		return fmt.Errorf("reading runtime log: %w", err)
	}
	base, rest, err := Base(events)
	if err != nil {
		return err
	}
	start, pcr := uint64(0), make([]byte, sha256.Size)
	if base != nil {
		start, pcr = base.Events, mustHex(base.PCR)
	}
	if c.Events <= start {
		return nil // already compacted that far
	}
	n := c.Events - start
	if n > uint64(len(rest)) {
		return fmt.Errorf("%w: it covers %d records, the log has %d", ErrNotCovered, c.Events, start+uint64(len(rest)))
	}
	if got := replayFrom(pcr, rest[:n]); hex.EncodeToString(got) != c.PCR {
		return fmt.Errorf("%w: the first %d records replay to %x, not %s", ErrNotCovered, c.Events, got, c.PCR)
	}
	var out bytes.Buffer
	out.Write(NewEvent(c.Events-1, KindCheckpoint, cpData).Encode())
	for _, e := range rest[n:] {
		out.Write(e.Encode())
	}
	tmp := r.path + ".compact"
	if err := os.WriteFile(tmp, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("compacting runtime log: %w", err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		return fmt.Errorf("compacting runtime log: %w", err)
	}
	r.size, r.count = int64(out.Len()), 1+len(rest[n:])
	return nil
}

// Size is the runtime log's size in bytes.
func (r *Recorder) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s) // checked by DecodeCheckpoint
	return b
}

func replayFrom(pcr []byte, events []Event) []byte {
	for _, e := range events {
		h := sha256.New()
		h.Write(pcr)
		h.Write(e.Digest)
		pcr = h.Sum(nil)
	}
	return pcr
}
