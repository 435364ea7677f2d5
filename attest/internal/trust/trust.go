// Package trust owns the verifier's node state: it is the only writer of
// a node's trust state, keys, pins and verdicts. It appraises evidence
// with package attestation, demotes, sweeps expired trust, enrols, takes
// the operator's decisions (accept firmware, revoke) and signs the
// attestation-result tokens. Every change is saved as a verdict before it
// is published.
//
// States (apiv1.NodeState): enrolling -> trusted -> suspect (missed
// deadline, disconnected, trust expired, verifier restarted) ->
// untrusted (failed appraisal, with the failing check named; revoked). A
// node is trusted only after a passing appraisal, and only until
// TrustedUntil.
package trust

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

// The node states, as the API names them.
const (
	Enrolling = apiv1.NodeState_NODE_STATE_ENROLLING
	Trusted   = apiv1.NodeState_NODE_STATE_TRUSTED
	Suspect   = apiv1.NodeState_NODE_STATE_SUSPECT
	Untrusted = apiv1.NodeState_NODE_STATE_UNTRUSTED
)

// Policy is what an appraisal demands and what a pass earns.
type Policy struct {
	// PCRs quoted; default attestation.DefaultPCRs.
	PCRs []int
	// AllowDev lets dev-class TPMs (software TPMs, uncertified EKs) be
	// trusted. Off in production.
	AllowDev bool
	// TrustFor is how long a pass keeps a node trusted: until the next
	// challenge's deadline at the latest.
	TrustFor time.Duration
}

// Options configure a Keeper.
type Options struct {
	Store store.Store
	// Manifests returns the active reference manifests.
	Manifests func() []*attestation.Manifest
	// Retired, if set, returns the retired manifests and why, by build.
	Retired func() ([]*attestation.Manifest, map[string]string)
	// SigningKey signs attestation result tokens.
	SigningKey ed25519.PrivateKey
	Policy     Policy
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// EvidenceDir, if set, receives a full dump of every appraisal.
	EvidenceDir string
	// Publish receives every verdict and state change, after it is saved.
	Publish func(*apiv1.StateChange)
	// Notify receives the verdict a node must hear at once: it has left
	// the trusted state (it stops its trusted-tier work).
	Notify func(node string, v *apiv1.Verdict)
}

// Keeper is the owner of node state.
type Keeper struct {
	o     Options
	locks sync.Map // node ID -> *sync.Mutex

	mu        sync.Mutex
	conflicts map[string]bool // EK conflicts already recorded (node/EK)
}

// New creates a Keeper. Nodes left trusted by a previous run are demoted
// to suspect: they must pass again before they count.
func New(ctx context.Context, o Options) (*Keeper, error) {
	if o.Store == nil || o.SigningKey == nil || o.Manifests == nil {
		return nil, errors.New("trust needs a store, a signing key and manifests")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Policy.PCRs) == 0 {
		o.Policy.PCRs = attestation.DefaultPCRs
	}
	if o.Publish == nil {
		o.Publish = func(*apiv1.StateChange) {}
	}
	if o.Notify == nil {
		o.Notify = func(string, *apiv1.Verdict) {}
	}
	k := &Keeper{o: o, conflicts: map[string]bool{}}
	n, err := o.Store.DemoteAll(ctx, Trusted, Suspect, "verifier restarted; awaiting re-check", o.Now())
	if err != nil {
		return nil, fmt.Errorf("demoting nodes after restart: %w", err)
	}
	if n > 0 {
		o.Logger.Info("demoted nodes until re-checked", "count", n)
	}
	return k, nil
}

// PCRs are the PCRs every challenge asks for.
func (k *Keeper) PCRs() []int { return k.o.Policy.PCRs }

// Now is the Keeper's clock.
func (k *Keeper) Now() time.Time { return k.o.Now() }

// Trusted reports whether n is trusted now.
func (k *Keeper) Trusted(n *store.Node) bool {
	return n.State == Trusted && k.o.Now().Before(n.TrustedUntil)
}

func (k *Keeper) lock(id string) func() {
	m, _ := k.locks.LoadOrStore(id, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// errSkip from an update's f leaves the node unchanged.
var errSkip = errors.New("no change")

// update loads a node, lets f change it, and stores the change with a
// verdict, publishing the state change. f returns the verdict's manifest.
func (k *Keeper) update(ctx context.Context, id string, f func(n *store.Node) (manifest string, err error)) (*store.Node, string, error) {
	return k.updateVerdict(ctx, id, func(n *store.Node, vd *store.Verdict) (err error) {
		vd.Manifest, err = f(n)
		return err
	})
}

// updateVerdict is update with the whole verdict record in reach of f.
func (k *Keeper) updateVerdict(ctx context.Context, id string, f func(n *store.Node, vd *store.Verdict) error) (*store.Node, string, error) {
	unlock := k.lock(id)
	defer unlock()
	n, err := k.o.Store.GetNode(ctx, id)
	if err != nil {
		return nil, "", err
	}
	from := n.State
	var vd store.Verdict
	if err := f(n, &vd); err != nil {
		return nil, "", err
	}
	now := k.o.Now()
	n.LastVerdict = now
	if n.State != Trusted {
		n.TrustedUntil = time.Time{}
	}
	vd.Node, vd.Time, vd.State, vd.Reason = id, now, n.State, n.Reason
	if err := k.o.Store.SaveVerdict(ctx, n, vd); err != nil {
		return nil, "", fmt.Errorf("saving verdict for %s: %w", id, err)
	}
	tok, err := k.token(n, vd.Manifest, now)
	if err != nil {
		return nil, "", err
	}
	k.o.Publish(&apiv1.StateChange{NodeId: id, From: from, To: n.State, Reason: n.Reason, UnixMs: now.UnixMilli(), Token: tok})
	if from != n.State {
		k.o.Logger.Info("node state changed", "node", id, "from", store.StateText(from), "to", store.StateText(n.State), "reason", n.Reason)
		if n.State != Trusted {
			// The node learns at once: it stops its trusted workloads.
			k.o.Notify(id, &apiv1.Verdict{State: n.State, Reason: n.Reason, Token: tok})
		}
	}
	return n, tok, nil
}

func (k *Keeper) token(n *store.Node, manifest string, now time.Time) (string, error) {
	exp := now
	if n.State == Trusted {
		exp = n.TrustedUntil
	}
	return attestation.SignToken(attestation.Claims{
		Issuer: "rigos-attest", Subject: n.ID, IssuedAt: now.Unix(), Expires: exp.Unix(),
		State: store.StateText(n.State), Class: n.Class, Build: manifest, EK: n.EKFingerprint, Reason: n.Reason,
	}, k.o.SigningKey)
}

// Demote moves a node to state with reason unless it is already worse.
func (k *Keeper) Demote(ctx context.Context, id string, state apiv1.NodeState, reason string) {
	_, _, err := k.update(ctx, id, func(n *store.Node) (string, error) {
		if n.State == Untrusted || (state == Suspect && n.State == Suspect) {
			return "", errSkip
		}
		n.State, n.Reason = state, reason
		return "", nil
	})
	if err != nil && !errors.Is(err, errSkip) {
		k.o.Logger.Error("demoting node", "node", id, "err", err)
	}
}

// FailNonce records evidence that answers no outstanding challenge.
func (k *Keeper) FailNonce(ctx context.Context, id, why string) (*store.Node, string, error) {
	return k.update(ctx, id, func(n *store.Node) (string, error) {
		n.State, n.Reason = Untrusted, string(attestation.CheckNonce)+": "+why
		return "", nil
	})
}

// Sweep demotes trusted nodes whose trust has expired. Run it
// periodically (Run does).
func (k *Keeper) Sweep(ctx context.Context) error {
	nodes, err := k.o.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	now := k.o.Now()
	for _, n := range nodes {
		if n.State == Trusted && now.After(n.TrustedUntil) {
			k.Demote(ctx, n.ID, Suspect, "trust expired: no passing appraisal since "+n.LastVerdict.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// Run sweeps expired trust every interval until ctx ends.
func (k *Keeper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := k.Sweep(ctx); err != nil && ctx.Err() == nil {
				k.o.Logger.Error("sweeping", "err", err)
			}
		}
	}
}

// Enrol stores a node that has just proven its TPM, in state enrolling,
// with its first verdict.
func (k *Keeper) Enrol(ctx context.Context, id string, ek attestation.EK, akPublic []byte) (*store.Node, error) {
	n := &store.Node{
		ID: id, EKFingerprint: ek.Fingerprint, EKPublic: ek.DER, AKPublic: akPublic,
		Class: ek.Class, State: Enrolling, Reason: "enrolled; awaiting first appraisal", Enrolled: k.o.Now(),
	}
	if err := k.o.Store.CreateNode(ctx, n); err != nil {
		return nil, err
	}
	n, _, err := k.update(ctx, n.ID, func(n *store.Node) (string, error) { return "", nil })
	if err != nil {
		return nil, err
	}
	k.o.Logger.Info("node enrolled", "node", n.ID, "class", n.Class, "ek", n.EKFingerprint[:16])
	return n, nil
}

// NewAK pins a new AK the node's enrolled TPM has proven it holds; a
// trusted node is suspect until that AK's evidence passes.
func (k *Keeper) NewAK(ctx context.Context, id string, akPublic []byte) (*store.Node, error) {
	n, _, err := k.update(ctx, id, func(n *store.Node) (string, error) {
		n.AKPublic = akPublic
		if n.State == Trusted {
			n.State = Suspect
		}
		n.Reason = "new AK activated for the same TPM; awaiting appraisal"
		return "", nil
	})
	return n, err
}

// maxConflicts bounds the remembered EK conflicts.
const maxConflicts = 4096

// FlagConflict records, once per EK, that a proven TPM other than the
// enrolled one claimed a node's ID: a verdict in the node's history and a
// published change, with the node's state and reason untouched (a
// software TPM can prove itself too, so the claim demotes nothing).
func (k *Keeper) FlagConflict(ctx context.Context, n *store.Node, ek attestation.EK) {
	k.mu.Lock()
	key := n.ID + "/" + ek.Fingerprint
	seen := k.conflicts[key]
	if !seen {
		if len(k.conflicts) >= maxConflicts {
			clear(k.conflicts)
		}
		k.conflicts[key] = true
	}
	k.mu.Unlock()
	msg := fmt.Sprintf("ek-conflict: another %s-class TPM (EK %s…) proved itself under this node's ID and was refused; the enrolled TPM is unchanged", ek.Class, ek.Fingerprint[:16])
	k.o.Logger.Warn("EK conflict", "node", n.ID, "ek", ek.Fingerprint[:16], "class", ek.Class)
	if seen {
		return
	}
	now := k.o.Now()
	if err := k.o.Store.SaveVerdict(ctx, n, store.Verdict{Node: n.ID, Time: now, State: n.State, Reason: msg}); err != nil {
		k.o.Logger.Error("recording EK conflict", "node", n.ID, "err", err)
	}
	k.o.Publish(&apiv1.StateChange{NodeId: n.ID, From: n.State, To: n.State, Reason: msg, UnixMs: now.UnixMilli()})
}

// AcceptFirmware has the node's firmware PCRs (and GPUs) pinned anew at
// its next passing appraisal.
func (k *Keeper) AcceptFirmware(ctx context.Context, id string) (*store.Node, error) {
	n, _, err := k.update(ctx, id, func(n *store.Node) (string, error) {
		n.RepinFirmware = true
		if n.State == Trusted {
			return "", nil
		}
		n.State, n.Reason = Suspect, "operator accepted new firmware; awaiting re-check"
		return "", nil
	})
	return n, err
}

// Revoke holds the node untrusted whatever it proves.
func (k *Keeper) Revoke(ctx context.Context, id, reason string) (*store.Node, error) {
	n, _, err := k.update(ctx, id, func(n *store.Node) (string, error) {
		n.Revoked, n.State, n.Reason = true, Untrusted, "revoked by operator: "+reason
		return "", nil
	})
	return n, err
}

// dump writes the appraisal to EvidenceDir, if set. Failing to keep a
// dump is logged, never fatal.
func (k *Keeper) dump(n *store.Node, req attestation.Request) {
	if k.o.EvidenceDir == "" {
		return
	}
	now := k.o.Now()
	b, err := json.MarshalIndent(attestation.NewDump(n.ID, now, req, store.StateText(n.State), n.Reason), "", "  ")
	if err == nil {
		err = os.MkdirAll(k.o.EvidenceDir, 0o700)
	}
	if err == nil {
		name := fmt.Sprintf("%s-%d-%06d.json", n.ID, now.UnixMilli(), n.Appraisals)
		err = os.WriteFile(filepath.Join(k.o.EvidenceDir, name), b, 0o600)
	}
	if err != nil {
		k.o.Logger.Error("keeping evidence", "node", n.ID, "err", err)
	}
}

// ClassProto is a trust class as the API names it.
func ClassProto(c attestation.TrustClass) apiv1.TrustClass {
	switch c {
	case attestation.ClassDev:
		return apiv1.TrustClass_TRUST_CLASS_DEV
	case attestation.ClassHardware:
		return apiv1.TrustClass_TRUST_CLASS_HARDWARE
	}
	return apiv1.TrustClass_TRUST_CLASS_UNSPECIFIED
}
