// Package verifier is the platform's attestation service: it enrols rigs
// over their one outbound stream, challenges them at random times,
// appraises their evidence with package attestation, keeps each node's
// trust state durable in a store, signs attestation results and
// publishes state changes.
//
// Trust states: enrolling -> trusted -> suspect (missed deadline,
// disconnected, trust expired, verifier restarted) -> untrusted (failed
// appraisal, with the failing check named; revoked). A node is trusted
// only after a passing appraisal, and only until TrustedUntil.
package verifier

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/measure"
)

// Node states as stored.
const (
	StateEnrolling = "enrolling"
	StateTrusted   = "trusted"
	StateSuspect   = "suspect"
	StateUntrusted = "untrusted"
)

// Policy controls challenges and trust.
type Policy struct {
	// PCRs to quote. Default is attestation.DefaultPCRs.
	PCRs []int
	// MeanInterval is the mean time between spot checks; intervals are
	// exponentially distributed, clamped to [MinInterval, MaxInterval].
	MeanInterval, MinInterval, MaxInterval time.Duration
	// Deadline is how long a node has to answer a challenge.
	Deadline time.Duration
	// HandshakeTimeout bounds the whole handshake: hello, credential
	// activation and the answer, before a stream is attached.
	HandshakeTimeout time.Duration
	// AllowDev lets dev-class TPMs (software TPMs, uncertified EKs) be
	// trusted. Off in production.
	AllowDev bool
	// RefuseDev refuses dev-class TPMs at the hello: they are not even
	// enrolled. The production switch.
	RefuseDev bool
	// EnrolRate and EnrolBurst bound how fast EKs the verifier does not
	// know yet may enrol (new nodes, and known node IDs presenting another
	// TPM). Defaults are 2 per second and a burst of 50.
	EnrolRate  float64
	EnrolBurst int
	// MaxHandshakes bounds the streams that have not proven their TPM
	// yet; more are refused at once. Default is 256.
	MaxHandshakes int
}

// Defaults of the enrolment limits (Policy).
const (
	DefaultEnrolRate     = 2
	DefaultEnrolBurst    = 50
	DefaultMaxHandshakes = 256
)

// Options configure a Verifier.
type Options struct {
	Store store.Store
	// Manifests returns the active reference manifests.
	Manifests func() []*attestation.Manifest
	// Retired, if set, returns the retired manifests and why, by build.
	Retired func() ([]*attestation.Manifest, map[string]string)
	// SigningKey signs attestation result tokens.
	SigningKey ed25519.PrivateKey
	// Roots (and Intermediates) certify hardware-class EKs.
	Roots, Intermediates *x509.CertPool
	Policy               Policy
	Logger               *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Nonces is the randomness for nonces; nil means crypto/rand.
	Nonces io.Reader
	// EvidenceDir, if set, receives a full dump of every appraisal.
	EvidenceDir string
}

// Verifier implements the Attestation and Admin services.
type Verifier struct {
	apiv1.UnimplementedAttestationServer
	apiv1.UnimplementedAdminServer

	o        Options
	rng      *mrand.Rand
	rngMu    sync.Mutex
	nextID   atomic.Uint64
	locks    sync.Map // node ID -> *sync.Mutex
	mu       sync.Mutex
	sessions map[string]*conn
	watchers map[chan *apiv1.StateChange]struct{}
	// workloads are the watchers of workloads' updates.
	workloads map[workloadKey][]chan *apiv1.WorkloadUpdate
	gpus      map[string]*apiv1.GPUReport // latest per node
	plans     map[string]helloPlan        // from each node's latest proven hello
	// sent counts, per node and workload sent to it, the events the node
	// reported: only those workloads' events are taken, and only so many.
	sent map[string]map[string]int
	// conflicts are the EK conflicts already recorded (node/EK).
	conflicts map[string]bool
	// enrolments limits new EKs; handshakes counts unproven streams.
	enrolments *rate.Limiter
	handshakes chan struct{}
}

// helloPlan is the ASK plan a node reported, or why its plan is unusable.
type helloPlan struct{ plan, err string }

// New creates a Verifier. Nodes left trusted by a previous run are
// demoted to suspect: they must pass again before they count.
func New(ctx context.Context, o Options) (*Verifier, error) {
	if o.Store == nil || o.SigningKey == nil || o.Manifests == nil {
		return nil, errors.New("verifier needs a store, a signing key and manifests")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Nonces == nil {
		o.Nonces = rand.Reader
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Policy.PCRs) == 0 {
		o.Policy.PCRs = attestation.DefaultPCRs
	}
	if o.Policy.EnrolRate == 0 {
		o.Policy.EnrolRate = DefaultEnrolRate
	}
	if o.Policy.EnrolBurst == 0 {
		o.Policy.EnrolBurst = DefaultEnrolBurst
	}
	if o.Policy.MaxHandshakes == 0 {
		o.Policy.MaxHandshakes = DefaultMaxHandshakes
	}
	v := &Verifier{
		o: o, rng: newRand(),
		sessions: map[string]*conn{}, watchers: map[chan *apiv1.StateChange]struct{}{},
		workloads: map[workloadKey][]chan *apiv1.WorkloadUpdate{}, gpus: map[string]*apiv1.GPUReport{}, plans: map[string]helloPlan{},
		sent: map[string]map[string]int{}, conflicts: map[string]bool{},
		enrolments: rate.NewLimiter(rate.Limit(o.Policy.EnrolRate), o.Policy.EnrolBurst),
		handshakes: make(chan struct{}, o.Policy.MaxHandshakes),
	}
	v.nextID.Store(uint64(o.Now().UnixNano()))
	n, err := o.Store.DemoteAll(ctx, StateTrusted, StateSuspect, "verifier restarted; awaiting re-check", o.Now())
	if err != nil {
		return nil, fmt.Errorf("demoting nodes after restart: %w", err)
	}
	if n > 0 {
		o.Logger.Info("demoted nodes until re-checked", "count", n)
	}
	return v, nil
}

// NextInterval draws the time to the next spot check.
func (v *Verifier) NextInterval() time.Duration {
	p := v.o.Policy
	v.rngMu.Lock()
	u := v.rng.Float64()
	v.rngMu.Unlock()
	d := time.Duration(-math.Log(1-u) * float64(p.MeanInterval))
	return min(max(d, p.MinInterval), p.MaxInterval)
}

func (v *Verifier) lock(id string) func() {
	m, _ := v.locks.LoadOrStore(id, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// update loads a node, lets f change it, and stores the change with a
// verdict, publishing the state change. f returns the verdict's manifest.
func (v *Verifier) update(ctx context.Context, id string, f func(n *store.Node) (manifest string, err error)) (*store.Node, string, error) {
	return v.updateVerdict(ctx, id, func(n *store.Node, vd *store.Verdict) (err error) {
		vd.Manifest, err = f(n)
		return err
	})
}

// updateVerdict is update with the whole verdict record in reach of f.
func (v *Verifier) updateVerdict(ctx context.Context, id string, f func(n *store.Node, vd *store.Verdict) error) (*store.Node, string, error) {
	unlock := v.lock(id)
	defer unlock()
	n, err := v.o.Store.GetNode(ctx, id)
	if err != nil {
		return nil, "", err
	}
	from := n.State
	var vd store.Verdict
	if err := f(n, &vd); err != nil {
		return nil, "", err
	}
	now := v.o.Now()
	n.LastVerdict = now
	if n.State != StateTrusted {
		n.TrustedUntil = time.Time{}
	}
	vd.Node, vd.Time, vd.State, vd.Reason = id, now, n.State, n.Reason
	if err := v.o.Store.SaveVerdict(ctx, n, vd); err != nil {
		return nil, "", fmt.Errorf("saving verdict for %s: %w", id, err)
	}
	tok, err := v.token(n, vd.Manifest, now)
	if err != nil {
		return nil, "", err
	}
	v.publish(&apiv1.StateChange{NodeId: id, From: stateProto(from), To: stateProto(n.State), Reason: n.Reason, UnixMs: now.UnixMilli(), Token: tok})
	if from != n.State {
		v.o.Logger.Info("node state changed", "node", id, "from", from, "to", n.State, "reason", n.Reason)
		if n.State != StateTrusted {
			// The node learns at once: it stops its trusted workloads.
			v.push(id, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: &apiv1.Verdict{
				State: stateProto(n.State), Reason: n.Reason, Token: tok,
			}}})
		}
	}
	return n, tok, nil
}

func (v *Verifier) token(n *store.Node, manifest string, now time.Time) (string, error) {
	exp := now
	if n.State == StateTrusted {
		exp = n.TrustedUntil
	}
	return attestation.SignToken(attestation.Claims{
		Issuer: "rigos-attest", Subject: n.ID, IssuedAt: now.Unix(), Expires: exp.Unix(),
		State: n.State, Class: n.Class, Build: manifest, EK: n.EKFingerprint, Reason: n.Reason,
	}, v.o.SigningKey)
}

// appraise records the verdict for evidence answering challenge c.
// The session's passed flag is set before the verdict is published, so a
// caller who saw the node turn trusted finds its stream proven too.
func (v *Verifier) appraise(ctx context.Context, id string, c *challenge, ev *apiv1.Evidence, s *conn, checkpoint *[]byte) (*store.Node, string, error) {
	n, tok, err := v.updateVerdict(ctx, id, func(n *store.Node, vd *store.Verdict) error {
		defer func() { s.passed.Store(n.State == StateTrusted) }()
		pinned := n.FirmwarePCRs
		if n.RepinFirmware {
			pinned = nil
		}
		pcrs := map[int][]byte{}
		for _, p := range ev.GetPcrs() {
			pcrs[int(p.GetIndex())] = p.GetDigest()
		}
		req := attestation.Request{
			AKPublic: n.AKPublic, Nonce: c.nonce, PCRs: v.o.Policy.PCRs,
			Evidence: attestation.Evidence{
				Quote: ev.GetQuote(), Signature: ev.GetSignature(), PCRs: pcrs,
				FirmwareLog: ev.GetFirmwareEventLog(), RuntimeLog: ev.GetRuntimeEventLog(),
			},
			LastClock: n.LastClock, PinnedFirmware: pinned, Manifests: v.o.Manifests(),
		}
		if v.o.Retired != nil {
			req.Retired, req.RetiredWhy = v.o.Retired()
		}
		req.Checkpoints = n.RuntimeCheckpoints
		r := attestation.Appraise(req)
		defer func() { v.dump(n, req) }()
		vd.Manifest = r.Manifest
		n.Appraisals++
		clockOK := true
		for _, f := range r.Failures {
			clockOK = clockOK && f.Check != attestation.CheckClock
		}
		if r.Quote != nil && clockOK {
			n.LastClock = &r.Quote.Clock
		}
		if err := r.Err(); err != nil {
			n.State, n.Reason = StateUntrusted, r.Reason()
			if r.Rebooted {
				n.Reason += " (after a reboot)"
			}
			return nil
		}
		// The runtime log replayed: it names every workload started.
		ws, err := measure.Workloads(r.RuntimeEvents)
		if err != nil {
			n.State, n.Reason = StateUntrusted, string(attestation.CheckRuntimeLog)+": "+err.Error()
			return nil
		}
		for _, w := range ws {
			vd.Workloads = append(vd.Workloads, w.Name())
		}
		gpus, err := gpuDigest(r.RuntimeBase, r.RuntimeEvents)
		if err != nil {
			n.State, n.Reason = StateUntrusted, string(attestation.CheckRuntimeLog)+": "+err.Error()
			return nil
		}
		defer func() {
			if n.State == StateTrusted {
				*checkpoint = issueCheckpoint(n, r, gpus)
			}
		}()
		if n.GPUDigest != "" && !n.RepinFirmware && gpus != n.GPUDigest {
			n.State, n.Reason = StateUntrusted, fmt.Sprintf("%s: GPU inventory %s, pinned %s (an operator accepts a change with accept-firmware)",
				attestation.CheckGPUPins, short(gpus), short(n.GPUDigest))
			return nil
		}
		if n.GPUDigest == "" || n.RepinFirmware {
			n.GPUDigest = gpus
		}
		if pinned == nil {
			n.FirmwarePCRs, n.RepinFirmware = r.FirmwarePCRs, false
		}
		switch {
		case n.Revoked:
			n.State = StateUntrusted // keeps the revocation reason
		case n.Class != attestation.ClassHardware && !v.o.Policy.AllowDev:
			n.State, n.Reason = StateUntrusted, "ek: dev-class TPM; this verifier trusts hardware-class TPMs only"
		default:
			n.State = StateTrusted
			n.TrustedUntil = v.o.Now().Add(v.o.Policy.MaxInterval + v.o.Policy.Deadline)
			n.Reason = "appraisal passed (build " + r.Manifest + ")"
			if r.Rebooted {
				n.Reason += " after a reboot"
			}
			if len(ws) > 0 {
				n.Reason += fmt.Sprintf("; %d workload(s) measured", len(ws))
			}
		}
		return nil
	})
	if err != nil {
		s.passed.Store(false) // the verdict was not kept
	}
	return n, tok, err
}

// gpuDigest is the GPU inventory digest the runtime log measured last,
// or "none" when it measured none (after base, base's).
func gpuDigest(base *measure.Checkpoint, events []measure.Event) (string, error) {
	inv, err := measure.GPUInventories(events)
	if err != nil {
		return "", err
	}
	switch {
	case len(inv) > 0:
		return inv[len(inv)-1].Digest, nil
	case base != nil && base.GPU != "":
		return base.GPU, nil
	}
	return "none", nil
}

// keptCheckpoints is how many checkpoints a node may start its log with:
// the latest few, so one issued just before the node compacted its log
// still counts when the next challenge crosses it.
const keptCheckpoints = 4

// issueCheckpoint records, for a node whose appraisal r passed, the
// checkpoint standing for the runtime records r covered, and returns its
// data (sent with the verdict).
func issueCheckpoint(n *store.Node, r *attestation.Result, gpus string) []byte {
	count := uint64(len(r.RuntimeEvents))
	if r.RuntimeBase != nil {
		count += r.RuntimeBase.Events
	}
	if count == 0 {
		return nil
	}
	boot := r.Quote.Clock.ResetCount
	cp := measure.Checkpoint{Boot: boot, Events: count,
		PCR: hex.EncodeToString(r.Quote.PCRs[measure.RuntimePCR]), GPU: gpus}.Encode()
	var kept [][]byte // this boot's, older ones first
	for _, c := range n.RuntimeCheckpoints {
		if old, err := measure.DecodeCheckpoint(c); err == nil && old.Boot == boot && !bytes.Equal(c, cp) {
			kept = append(kept, c)
		}
	}
	n.RuntimeCheckpoints = append(kept[max(0, len(kept)-keptCheckpoints+1):], cp)
	return cp
}

func short(d string) string {
	if len(d) > 16 {
		return d[:16] + "…"
	}
	return d
}

// dump writes the appraisal to EvidenceDir, if set. Failing to keep a
// dump is logged, never fatal.
func (v *Verifier) dump(n *store.Node, req attestation.Request) {
	if v.o.EvidenceDir == "" {
		return
	}
	now := v.o.Now()
	b, err := json.MarshalIndent(attestation.NewDump(n.ID, now, req, n.State, n.Reason), "", "  ")
	if err == nil {
		err = os.MkdirAll(v.o.EvidenceDir, 0o700)
	}
	if err == nil {
		name := fmt.Sprintf("%s-%d-%06d.json", n.ID, now.UnixMilli(), n.Appraisals)
		err = os.WriteFile(filepath.Join(v.o.EvidenceDir, name), b, 0o600)
	}
	if err != nil {
		v.o.Logger.Error("keeping evidence", "node", n.ID, "err", err)
	}
}

// demote moves a node to state with reason unless it is already worse.
func (v *Verifier) demote(ctx context.Context, id, state, reason string) {
	_, _, err := v.update(ctx, id, func(n *store.Node) (string, error) {
		if n.State == StateUntrusted || (state == StateSuspect && n.State == StateSuspect) {
			return "", errSkip
		}
		n.State, n.Reason = state, reason
		return "", nil
	})
	if err != nil && !errors.Is(err, errSkip) {
		v.o.Logger.Error("demoting node", "node", id, "err", err)
	}
}

// failNonce records evidence that answers no outstanding challenge.
func (v *Verifier) failNonce(ctx context.Context, id, why string) (*store.Node, string, error) {
	return v.update(ctx, id, func(n *store.Node) (string, error) {
		n.State, n.Reason = StateUntrusted, string(attestation.CheckNonce)+": "+why
		return "", nil
	})
}

var errSkip = errors.New("no change")

// Sweep demotes trusted nodes whose trust has expired. Run it
// periodically (Run does).
func (v *Verifier) Sweep(ctx context.Context) error {
	nodes, err := v.o.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	now := v.o.Now()
	for _, n := range nodes {
		if n.State == StateTrusted && now.After(n.TrustedUntil) {
			v.demote(ctx, n.ID, StateSuspect, "trust expired: no passing appraisal since "+n.LastVerdict.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// Run sweeps expired trust until ctx ends.
func (v *Verifier) Run(ctx context.Context) {
	t := time.NewTicker(max(v.o.Policy.Deadline, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.Sweep(ctx); err != nil && ctx.Err() == nil {
				v.o.Logger.Error("sweeping", "err", err)
			}
		}
	}
}

func (v *Verifier) publish(c *apiv1.StateChange) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for w := range v.watchers {
		select {
		case w <- c:
		default: // a slow watcher misses changes rather than stalling verdicts
		}
	}
}

func stateProto(s string) apiv1.NodeState {
	switch s {
	case StateEnrolling:
		return apiv1.NodeState_NODE_STATE_ENROLLING
	case StateTrusted:
		return apiv1.NodeState_NODE_STATE_TRUSTED
	case StateSuspect:
		return apiv1.NodeState_NODE_STATE_SUSPECT
	case StateUntrusted:
		return apiv1.NodeState_NODE_STATE_UNTRUSTED
	}
	return apiv1.NodeState_NODE_STATE_UNSPECIFIED
}

func classProto(c attestation.TrustClass) apiv1.TrustClass {
	switch c {
	case attestation.ClassDev:
		return apiv1.TrustClass_TRUST_CLASS_DEV
	case attestation.ClassHardware:
		return apiv1.TrustClass_TRUST_CLASS_HARDWARE
	}
	return apiv1.TrustClass_TRUST_CLASS_UNSPECIFIED
}

func newRand() *mrand.Rand {
	var seed [32]byte
	_, _ = io.ReadFull(rand.Reader, seed[:])
	return mrand.New(mrand.NewChaCha8(seed))
}
