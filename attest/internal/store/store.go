// Package store keeps the verifier's durable state: enrolled nodes with
// their pinned keys and trust state, and every verdict. Store is the
// interface; SQLite (embedded, pure Go) is the default implementation and
// a PostgreSQL one can sit behind the same interface.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)

// StateText is how a node state is stored: "enrolling", "trusted",
// "suspect" or "untrusted".
func StateText(s apiv1.NodeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATE_"))
}

// ParseState reads a stored node state.
func ParseState(text string) (apiv1.NodeState, error) {
	s, ok := apiv1.NodeState_value["NODE_STATE_"+strings.ToUpper(text)]
	if !ok || s == 0 {
		return 0, fmt.Errorf("stored node state %q is not one this verifier knows", text)
	}
	return apiv1.NodeState(s), nil
}

// Node is one enrolled rig.
type Node struct {
	ID            string
	EKFingerprint string
	EKPublic      []byte // PKIX DER
	AKPublic      []byte // TPMT_PUBLIC, pinned at activation
	Class         attestation.TrustClass
	State         apiv1.NodeState // stored as its StateText
	Reason        string
	TrustedUntil  time.Time
	Enrolled      time.Time
	LastVerdict   time.Time
	Appraisals    uint64
	// FirmwarePCRs are pinned at the first pass; nil until then.
	FirmwarePCRs map[int][]byte
	// GPUDigest is the pinned GPU inventory digest (hex; "none" for a
	// node without GPUs); empty until the first pass.
	GPUDigest string
	// RuntimeCheckpoints are the latest runtime-log checkpoints issued to
	// the node (measure.Checkpoint data), newest last.
	RuntimeCheckpoints [][]byte
	// RepinFirmware is set by an operator to accept changed firmware
	// (and GPUs).
	RepinFirmware bool
	// Revoked holds the node untrusted until an operator re-admits it.
	Revoked   bool
	LastClock *attestation.Clock
}

// Verdict is one appraisal outcome or state change.
type Verdict struct {
	Node     string
	Time     time.Time
	State    apiv1.NodeState
	Reason   string
	Manifest string
	// Workloads are the workloads the node's runtime log named.
	Workloads []string
}

// WorkloadEvent is one state change of a workload, as the node reported it.
type WorkloadEvent struct {
	Node, Workload string
	Time           time.Time
	State          string // "sent" (by the verifier), "preparing", "running", "exited", "killed", "failed"
	Reason         string
	ExitCode       int
	OOMKilled      bool
	ImageDigest    string
}

// Store is the verifier's persistence. Implementations must make a
// successful write durable before returning.
type Store interface {
	// CreateNode adds a node; ErrConflict if the ID or EK is taken.
	CreateNode(ctx context.Context, n *Node) error
	// GetNode returns a node by ID or ErrNotFound.
	GetNode(ctx context.Context, id string) (*Node, error)
	// NodeByEK returns the node holding an EK or ErrNotFound.
	NodeByEK(ctx context.Context, fingerprint string) (*Node, error)
	// SaveVerdict updates a node and appends its verdict atomically.
	SaveVerdict(ctx context.Context, n *Node, v Verdict) error
	// ListNodes returns all nodes ordered by ID.
	ListNodes(ctx context.Context) ([]*Node, error)
	// History returns a node's latest verdicts, newest first.
	History(ctx context.Context, id string, limit int) ([]Verdict, error)
	// DemoteAll moves every node in state from to state to with reason,
	// recording a verdict for each; it returns how many moved.
	DemoteAll(ctx context.Context, from, to apiv1.NodeState, reason string, now time.Time) (int, error)
	// SaveWorkloadEvent records a workload event.
	SaveWorkloadEvent(ctx context.Context, e WorkloadEvent) error
	// WorkloadEventCount returns how many events are recorded for one
	// workload of a node (0: it was never sent there).
	WorkloadEventCount(ctx context.Context, node, workload string) (int, error)
	// WorkloadEvents returns a node's latest workload events, newest first.
	WorkloadEvents(ctx context.Context, node string, limit int) ([]WorkloadEvent, error)
	// SaveRollout creates or updates a rollout and the nodes given in
	// it (not the ones left out) atomically.
	SaveRollout(ctx context.Context, r *Rollout) error
	// SaveRolloutNode updates one node of a rollout.
	SaveRolloutNode(ctx context.Context, build string, n RolloutNode) error
	// Rollouts returns every rollout with its nodes, newest first, nodes
	// in their order.
	Rollouts(ctx context.Context) ([]*Rollout, error)
	// SaveUpdateEvent keeps a node's latest update event (an encoded
	// apiv1.UpdateEvent), replacing the one before; LastUpdateEvent
	// returns it, or ErrNotFound.
	SaveUpdateEvent(ctx context.Context, node string, t time.Time, event []byte) error
	LastUpdateEvent(ctx context.Context, node string) ([]byte, error)
	Close() error
}

// Rollout is a build being installed on a set of nodes, a few at a
// time (package rollout runs it). A build has one rollout.
type Rollout struct {
	Build            string
	Created, Updated time.Time
	State            string // "running", "paused", "halted", "done"
	Reason           string
	// Parallel is how many nodes update at once; MaxFailedPercent the
	// share of its nodes that may fail before the rollout halts.
	Parallel         int
	MaxFailedPercent int
	// Force reboots nodes while workloads run; Fetch has them fetch the
	// build over HTTPS.
	Force, Fetch bool
	Nodes        []RolloutNode
}

// RolloutNode is one node of a rollout.
type RolloutNode struct {
	Node     string
	Position int
	State    string // "pending", "updating", "waiting", "rebooting", "booted", "done", "failed"
	Reason   string
	Updated  time.Time
}
