// Package measure defines the RigOS runtime measurements: boot-phase
// markers and (later) workload and GPU inventory events, each extended
// into RuntimePCR and recorded in a runtime event log.
//
// The log uses the TLV encoding of the TCG Canonical Event Log (CEL):
// every record is RECNUM, PCR, DIGESTS and a content TLV. RigOS content
// (type ContentRigOS) is itself two TLVs: the event kind and its data.
// The SHA-256 digest of a record is SHA-256 over the encoded content
// value, so an event cannot be relabelled without changing its digest.
package measure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// RuntimePCR is the PCR RigOS extends after the boot stub is done. PCR 15
// is unused by UEFI firmware, systemd-stub and the Linux kernel.
const RuntimePCR = 15

// Kinds of runtime events.
const (
	KindPhase    = "phase"    // a boot-phase marker, data is the phase name
	KindWorkload = "workload" // a workload about to start
	KindGPU      = "gpu"      // digest of the GPU inventory
	// KindStateKey: init opened the state with a key another build
	// sealed for this one on an update; data is StateKeyHandover and that
	// build's PCR 11 in hex. The verifier accepts it only from an active
	// build.
	KindStateKey = "state-key"
)

// StateKeyHandover starts a KindStateKey event's data.
const StateKeyHandover = "handover "

// StateKeyCreators returns the PCR 11 values (hex) of the builds that
// handed the state key over, from the state-key events among events.
func StateKeyCreators(events []Event) ([]string, error) {
	var out []string
	for _, e := range events {
		if e.Kind != KindStateKey {
			continue
		}
		v, ok := strings.CutPrefix(string(e.Data), StateKeyHandover)
		if b, err := hex.DecodeString(v); !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("state-key event %q: want %q and a hex PCR 11", e.Data, StateKeyHandover)
		}
		out = append(out, v)
	}
	return out, nil
}

// Boot phases, in the order init reaches them.
const (
	PhaseEnterInitrd   = "enter-initrd"
	PhaseModulesLocked = "modules-locked"
	// PhaseStateKeySealed follows the unlocking of the encrypted state
	// partition, whose key is sealed to PCR 15 before this phase.
	PhaseStateKeySealed = "state-key-sealed"
	PhaseStartAgent     = "start-agent"
)

// BootPhases is the sequence init measures, in order; manifests expect it.
var BootPhases = []string{PhaseEnterInitrd, PhaseModulesLocked, PhaseStateKeySealed, PhaseStartAgent}

// CEL TLV types used by RigOS.
const (
	tlvRecnum  = 0
	tlvPCR     = 1
	tlvDigests = 3
	// ContentRigOS is the CEL content type of RigOS events (vendor range).
	ContentRigOS = 0x80

	contentKind = 0
	contentData = 1

	algSHA256 = 0x000b
)

// MaxEventData bounds one event's data; MaxEvents and MaxLogBytes bound
// a log (the verifier refuses a longer one).
const (
	MaxEventData = 64 << 10
	MaxEvents    = 4096
	MaxLogBytes  = 1 << 20
)

// Workload events are the ones that come and go with customers; a log
// keeps WorkloadReserveEvents and WorkloadReserveBytes free of them for
// the node's own measurements (boot phases, GPU inventory changes), so
// a node that has run as many workloads as fit still attests, and new
// workloads are refused with ErrLogFull instead.
const (
	MaxWorkloadData       = 2 << 10
	WorkloadReserveEvents = 256
	WorkloadReserveBytes  = 256 << 10
)

// Event is one runtime measurement.
type Event struct {
	Recnum uint64
	PCR    int
	Digest []byte // SHA-256 of the encoded content
	Kind   string
	Data   []byte
}

// NewEvent returns the event with record number recnum for kind and data.
func NewEvent(recnum uint64, kind string, data []byte) Event {
	c := content(kind, data)
	d := sha256.Sum256(c)
	return Event{Recnum: recnum, PCR: RuntimePCR, Digest: d[:], Kind: kind, Data: append([]byte(nil), data...)}
}

func content(kind string, data []byte) []byte {
	var b bytes.Buffer
	writeTLV(&b, contentKind, []byte(kind))
	writeTLV(&b, contentData, data)
	return b.Bytes()
}

func writeTLV(b *bytes.Buffer, typ byte, v []byte) {
	b.WriteByte(typ)
	_ = binary.Write(b, binary.BigEndian, uint32(len(v)))
	b.Write(v)
}

// Encode returns the CEL TLV encoding of one event.
func (e Event) Encode() []byte {
	var b bytes.Buffer
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], e.Recnum)
	writeTLV(&b, tlvRecnum, n[:])
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(e.PCR))
	writeTLV(&b, tlvPCR, p[:])
	var d bytes.Buffer
	writeTLV(&d, byte(algSHA256), e.Digest) // TLV type is the low byte of TPM_ALG_SHA256
	writeTLV(&b, tlvDigests, d.Bytes())
	writeTLV(&b, ContentRigOS, content(e.Kind, e.Data))
	return b.Bytes()
}

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("malformed runtime event log")

// Parse decodes a runtime event log. It checks the structure, that record
// numbers count up from 0, that every digest is the SHA-256 of the event's
// content, and the size limits. It does not check the events against any
// PCR: see Replay.
func Parse(b []byte) ([]Event, error) {
	var out []Event
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		if len(out) >= MaxEvents {
			return nil, fmt.Errorf("%w: more than %d events", ErrMalformed, MaxEvents)
		}
		e, err := parseRecord(r)
		if err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrMalformed, len(out), err)
		}
		switch want := next(out); {
		case e.Kind == KindCheckpoint && len(out) > 0:
			return nil, fmt.Errorf("%w: record %d: a checkpoint may only be the first record", ErrMalformed, len(out))
		case e.Kind == KindCheckpoint:
			c, err := DecodeCheckpoint(e.Data)
			if err != nil {
				return nil, fmt.Errorf("%w: record 0: %w", ErrMalformed, err)
			}
			if e.Recnum != c.Events-1 {
				return nil, fmt.Errorf("%w: checkpoint for %d records has record number %d", ErrMalformed, c.Events, e.Recnum)
			}
		case e.Recnum != want:
			return nil, fmt.Errorf("%w: record %d has record number %d", ErrMalformed, len(out), e.Recnum)
		}
		out = append(out, e)
	}
	return out, nil
}

func readTLV(r *bytes.Reader, want int) ([]byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("reading type: %w", err)
	}
	if want >= 0 && int(typ) != want {
		return nil, fmt.Errorf("TLV type %d, want %d", typ, want)
	}
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("reading length: %w", err)
	}
	if int64(n) > int64(r.Len()) {
		return nil, fmt.Errorf("TLV length %d beyond the %d bytes left", n, r.Len())
	}
	v := make([]byte, n)
	_, _ = r.Read(v)
	return v, nil
}

func parseRecord(r *bytes.Reader) (Event, error) {
	var e Event
	v, err := readTLV(r, tlvRecnum)
	if err != nil {
		return e, fmt.Errorf("recnum: %w", err)
	}
	if len(v) != 8 {
		return e, fmt.Errorf("recnum is %d bytes, want 8", len(v))
	}
	e.Recnum = binary.BigEndian.Uint64(v)
	if v, err = readTLV(r, tlvPCR); err != nil {
		return e, fmt.Errorf("pcr: %w", err)
	}
	if len(v) != 4 {
		return e, fmt.Errorf("pcr is %d bytes, want 4", len(v))
	}
	if e.PCR = int(binary.BigEndian.Uint32(v)); e.PCR != RuntimePCR {
		return e, fmt.Errorf("event for PCR %d, runtime events go to PCR %d", e.PCR, RuntimePCR)
	}
	if v, err = readTLV(r, tlvDigests); err != nil {
		return e, fmt.Errorf("digests: %w", err)
	}
	dr := bytes.NewReader(v)
	d, err := readTLV(dr, algSHA256)
	if err != nil || dr.Len() != 0 || len(d) != sha256.Size {
		return e, errors.New("digests must hold exactly one SHA-256 digest")
	}
	e.Digest = d
	c, err := readTLV(r, ContentRigOS)
	if err != nil {
		return e, fmt.Errorf("content: %w", err)
	}
	cr := bytes.NewReader(c)
	kind, err := readTLV(cr, contentKind)
	if err != nil {
		return e, fmt.Errorf("content kind: %w", err)
	}
	data, err := readTLV(cr, contentData)
	if err != nil {
		return e, fmt.Errorf("content data: %w", err)
	}
	if cr.Len() != 0 {
		return e, errors.New("trailing bytes in content")
	}
	if len(data) > MaxEventData {
		return e, fmt.Errorf("event data of %d bytes exceeds %d", len(data), MaxEventData)
	}
	e.Kind, e.Data = string(kind), data
	if sum := sha256.Sum256(c); !bytes.Equal(sum[:], e.Digest) {
		return e, errors.New("digest does not match content")
	}
	return e, nil
}

// next is the record number the record after events must have.
func next(events []Event) uint64 {
	if len(events) == 0 {
		return 0
	}
	return events[len(events)-1].Recnum + 1
}

// Replay returns the value RuntimePCR has after events: starting from
// zero, or from a checkpoint's value when the first event is one (the
// checkpoint itself is not extended). Whether the checkpoint may be
// believed is the verifier's to decide (see KindCheckpoint).
func Replay(events []Event) []byte {
	if len(events) > 0 && events[0].Kind == KindCheckpoint {
		if c, err := DecodeCheckpoint(events[0].Data); err == nil {
			return replayFrom(mustHex(c.PCR), events[1:])
		}
	}
	return replayFrom(make([]byte, sha256.Size), events)
}

// Phases returns the data of the phase events, in order.
func Phases(events []Event) []string {
	var out []string
	for _, e := range events {
		if e.Kind == KindPhase {
			out = append(out, string(e.Data))
		}
	}
	return out
}

// Workload is the data of a workload event: what the agent was about to
// start. Config is the SHA-256 of the OCI runtime spec it ran with.
type Workload struct {
	ID          string `json:"id"`
	Image       string `json:"image"`
	Digest      string `json:"digest"`
	Config      string `json:"config"`
	TrustedTier bool   `json:"trusted_tier"`
	// Outbound and Ports are the network access granted.
	Outbound bool     `json:"outbound,omitempty"`
	Ports    []uint32 `json:"ports,omitempty"`
}

// Encode returns the event data for w.
func (w Workload) Encode() []byte {
	b, _ := json.Marshal(w) // strings, bools and numbers always marshal
	return b
}

// Name is how verdicts name the workload: its ID and image digest.
func (w Workload) Name() string { return w.ID + "@" + w.Digest }

// Workloads returns the workloads of the workload events, in order. An
// event whose data is not a workload description is an error: the log
// replayed, so the node measured something it cannot explain.
func Workloads(events []Event) ([]Workload, error) {
	return decodeAll(events, KindWorkload, "workload", func(w Workload) bool { return w.ID != "" && w.Digest != "" })
}

// decodeAll strictly decodes the data of the events of kind, in order;
// an event that does not decode, or that ok rejects, is an error.
func decodeAll[T any](events []Event, kind, what string, ok func(T) bool) ([]T, error) {
	var out []T
	for _, e := range events {
		if e.Kind != kind {
			continue
		}
		var v T
		dec := json.NewDecoder(bytes.NewReader(e.Data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil || !ok(v) {
			return nil, fmt.Errorf("runtime event %d: malformed %s event", e.Recnum, what)
		}
		out = append(out, v)
	}
	return out, nil
}

// GPUInventory is the data of a GPU event: how many GPUs the node has
// and the digest of their inventory (gpu.Digest, hex).
type GPUInventory struct {
	Count  int    `json:"count"`
	Digest string `json:"digest"`
}

// Encode returns the event data for g.
func (g GPUInventory) Encode() []byte {
	b, _ := json.Marshal(g) // an int and a string always marshal
	return b
}

// GPUInventories returns the GPU events' data, in order.
func GPUInventories(events []Event) ([]GPUInventory, error) {
	return decodeAll(events, KindGPU, "GPU", func(g GPUInventory) bool { return len(g.Digest) == 64 })
}
