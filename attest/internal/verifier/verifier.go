// Package verifier is the platform's attestation service: it enrols rigs
// over their one outbound stream (every stream proves its TPM by
// credential activation before it counts), challenges them at random
// times and relays what they report. It wires the verifier together:
// node state belongs to package trust, streams and subscriptions to
// package hub, and the operator's API to package admin.
package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/rollout"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
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
	// UpdateDir, if set, holds the builds Update streams to nodes
	// (admin.Updates).
	UpdateDir string
	// UpdateURL, if set, is where nodes fetch UpdateDir's builds over
	// HTTPS when asked to (admin.Updates).
	UpdateURL string
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
	// RolloutBootTimeout and RolloutTick tune rollouts (rollout.Options;
	// defaults if 0).
	RolloutBootTimeout, RolloutTick time.Duration
}

// Verifier implements the Attestation service and holds the verifier's
// parts.
type Verifier struct {
	apiv1.UnimplementedAttestationServer

	o      Options
	trust  *trust.Keeper
	hub    *hub.Hub
	admin  *admin.Server
	rng    *mrand.Rand
	rngMu  sync.Mutex
	nextID atomic.Uint64
	// enrolments limits new EKs; handshakes counts unproven streams.
	enrolments *rate.Limiter
	handshakes chan struct{}
	// rebooting are updates nodes rebooted into, by node: the first
	// appraisal on a later stream tells whether the new build booted.
	rebootingMu sync.Mutex
	rebooting   map[string]rebootingInto
	kept        map[string]keptUpdate // by node, under rebootingMu
	rollouts    *rollout.Runner
}

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
	h := hub.New(o.Store, o.Logger)
	k, err := trust.New(ctx, trust.Options{
		Store: o.Store, Manifests: o.Manifests, Retired: o.Retired, SigningKey: o.SigningKey,
		Policy: trust.Policy{PCRs: o.Policy.PCRs, AllowDev: o.Policy.AllowDev, TrustFor: o.Policy.MaxInterval + o.Policy.Deadline},
		Logger: o.Logger, Now: o.Now, EvidenceDir: o.EvidenceDir,
		Publish: h.Publish,
		Notify: func(node string, vd *apiv1.Verdict) {
			h.Push(node, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: vd}})
		},
	})
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		o: o, trust: k, hub: h, admin: admin.New(o.Store, k, h), rng: newRand(),
		enrolments: rate.NewLimiter(rate.Limit(o.Policy.EnrolRate), o.Policy.EnrolBurst),
		handshakes: make(chan struct{}, o.Policy.MaxHandshakes),
	}
	v.admin.SetUpdates(admin.Updates{Dir: o.UpdateDir, URL: o.UpdateURL, Manifests: o.Manifests})
	v.rollouts, err = rollout.New(ctx, rollout.Options{
		Store: o.Store, Update: v.admin.Update, Watch: h.WatchUpdate, Last: h.LastUpdate, Booted: h.Booted, Connected: h.Connected,
		OnBuild: v.onBuild, BootTimeout: o.RolloutBootTimeout, Tick: o.RolloutTick, Now: o.Now, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	v.admin.SetRollouts(v.rollouts)
	v.nextID.Store(uint64(o.Now().UnixNano()))
	return v, nil
}

// Admin is the Admin service over this verifier.
func (v *Verifier) Admin() apiv1.AdminServer { return v.admin }

// Subscribe registers for every verdict and state change (see
// hub.Hub.Subscribe).
func (v *Verifier) Subscribe() (<-chan *apiv1.StateChange, func()) { return v.hub.Subscribe() }

// Sweep demotes trusted nodes whose trust has expired.
func (v *Verifier) Sweep(ctx context.Context) error { return v.trust.Sweep(ctx) }

// Run sweeps expired trust and runs the rollouts until ctx ends.
func (v *Verifier) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.rollouts.Run(ctx)
	}()
	v.trust.Run(ctx, max(v.o.Policy.Deadline, 100*time.Millisecond))
	<-done
}

// onBuild returns the build a node runs if it is trusted now: the
// build of its latest verdict that names one.
func (v *Verifier) onBuild(ctx context.Context, node string) (string, error) {
	n, err := v.o.Store.GetNode(ctx, node)
	if err != nil || n.State != trust.Trusted {
		return "", err
	}
	h, err := v.o.Store.History(ctx, node, 8)
	if err != nil {
		return "", err
	}
	for _, vd := range h {
		if vd.Manifest != "" {
			return vd.Manifest, nil
		}
	}
	return "", nil
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

func newRand() *mrand.Rand {
	var seed [32]byte
	_, _ = io.ReadFull(rand.Reader, seed[:])
	return mrand.New(mrand.NewChaCha8(seed))
}
