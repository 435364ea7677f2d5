package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

type challenge struct {
	id       uint64
	nonce    []byte
	deadline time.Time
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// refusal is an error sent to the agent before the session ends.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// Session implements the Attestation service: enrolment, then rounds of
// challenges for as long as the stream stays open.
func (v *Verifier) Session(stream apiv1.Attestation_SessionServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	recv := make(chan *apiv1.AgentMessage)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recv <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	in := &inbox{ctx: ctx, recv: recv, errc: recvErr}

	// Until it has proven its TPM a stream holds a handshake slot, and
	// only so many exist: idle or slow strangers cannot pile up.
	select {
	case v.handshakes <- struct{}{}:
	default:
		return status.Error(codes.ResourceExhausted, "too many handshakes in progress; retry later")
	}
	hctx, hcancel := context.WithTimeout(ctx, v.o.Policy.HandshakeTimeout)
	n, plan, err := v.enrol(hctx, stream, &inbox{ctx: hctx, recv: recv, errc: recvErr})
	hcancel()
	<-v.handshakes
	if err != nil {
		if errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = refuse("handshake not completed within %s", v.o.Policy.HandshakeTimeout)
		}
		var r *refusal
		if errors.As(err, &r) {
			v.o.Logger.Warn("enrolment refused", "reason", r.reason)
			_ = stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Refusal{Refusal: &apiv1.Refusal{Reason: r.reason}}})
			return status.Error(codes.PermissionDenied, r.reason)
		}
		return err
	}
	// Proven: only now does anything the stream said count.
	s := v.hub.Attach(n.ID, cancel, plan)
	defer func() {
		if v.hub.Detach(n.ID, s) {
			v.trust.Demote(context.WithoutCancel(ctx), n.ID, trust.Suspect, "disconnected")
		}
	}()
	err = v.rounds(ctx, stream, in, n.ID, s)
	var r *refusal
	if errors.As(err, &r) {
		_ = stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Refusal{Refusal: &apiv1.Refusal{Reason: r.reason}}})
		return status.Error(codes.InvalidArgument, r.reason)
	}
	return err
}

type inbox struct {
	ctx  context.Context
	recv chan *apiv1.AgentMessage
	errc chan error
}

// next waits for one message until the inbox's context ends (the
// handshake's deadline bounds the whole handshake, not each message).
func (in *inbox) next() (*apiv1.AgentMessage, error) {
	select {
	case m := <-in.recv:
		return m, nil
	case err := <-in.errc:
		return nil, err
	case <-in.ctx.Done():
		return nil, in.ctx.Err()
	}
}

// MaxHandshakeMessage bounds each message of a stream that has not
// proven its TPM yet (a hello with an EK certificate and an ASK plan is a
// few KiB).
const MaxHandshakeMessage = 160 << 10

// enrol runs the hello and credential activation: every stream proves
// that the TPM holding the node's EK also holds the AK it presents before
// anything it says is kept or acted upon. Public values alone (an EK and
// AK read off the TPM bus or the disk) attach nothing, replace no session
// and change no node.
func (v *Verifier) enrol(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox) (*store.Node, hub.Plan, error) {
	h, err := readHello(in)
	if err != nil {
		return nil, hub.Plan{}, err
	}
	plan := hub.Plan{Plan: h.GetAskPlan(), Err: h.GetAskPlanError(), Hardware: h.GetHardware()}
	c, err := v.claim(ctx, h)
	if err != nil {
		return nil, plan, err
	}
	if err := activate(stream, in, c); err != nil {
		return nil, plan, err
	}
	n, err := v.admit(ctx, h.GetNodeId(), c)
	if err != nil {
		return nil, plan, err
	}
	return n, plan, stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Enrolled{Enrolled: &apiv1.Enrolled{
		NodeId: n.ID, TrustClass: trust.ClassProto(n.Class),
	}}})
}

// readHello takes the stream's first message, which must be a
// well-formed hello.
func readHello(in *inbox) (*apiv1.Hello, error) {
	m, err := in.next()
	if err != nil {
		return nil, err
	}
	if proto.Size(m) > MaxHandshakeMessage {
		return nil, refuse("hello: %d bytes, more than %d", proto.Size(m), MaxHandshakeMessage)
	}
	h := m.GetHello()
	if h == nil {
		return nil, refuse("protocol: the first message must be a hello")
	}
	if !nodeIDPattern.MatchString(h.GetNodeId()) {
		return nil, refuse("node id %q: want 1-128 letters, digits, '.', '_' or '-'", h.GetNodeId())
	}
	if len(h.GetAskPlan()) > 64<<10 || len(h.GetAskPlanError()) > 64<<10 {
		return nil, refuse("hello: ASK plan too large")
	}
	if err := h.GetHardware().Validate(); err != nil {
		return nil, refuse("hello: %v", err)
	}
	return h, nil
}

// claimed is what a hello claims, checked as far as public values allow:
// an EK, an AK that TPM made, and what the store knows of both.
type claimed struct {
	ek       attestation.EK
	ak       attestation.AKParams
	existing *store.Node // the node enrolled under the hello's ID, if any
}

// claim checks a hello's EK and AK and looks them up. It changes
// nothing; only the enrolment rate limit is spent on TPMs not seen
// before.
func (v *Verifier) claim(ctx context.Context, h *apiv1.Hello) (claimed, error) {
	now := v.o.Now()
	ek, err := attestation.AppraiseEK(h.GetEkPublic(), h.GetEkCertificate(), v.o.Roots, v.o.Intermediates, now)
	if err != nil {
		return claimed{}, refuse("%v", err)
	}
	if ek.Class != attestation.ClassHardware && v.o.Policy.RefuseDev {
		return claimed{}, refuse("ek: dev-class TPM (%s); this verifier enrols hardware-class TPMs only", ek.Reason)
	}
	if ek.Class != attestation.ClassHardware {
		v.o.Logger.Debug("dev-class TPM", "node", h.GetNodeId(), "ek", ek.Fingerprint, "reason", ek.Reason)
	}
	c := claimed{ek: ek, ak: attestation.AKParams{
		Public: h.GetAk().GetPublic(), CreateData: h.GetAk().GetCreateData(),
		CreateAttestation: h.GetAk().GetCreateAttestation(), CreateSignature: h.GetAk().GetCreateSignature(),
	}}
	if err := attestation.VerifyAK(c.ak); err != nil {
		return claimed{}, refuse("%v", err)
	}
	byEK, err := v.o.Store.NodeByEK(ctx, ek.Fingerprint)
	switch {
	case err == nil && byEK.ID != h.GetNodeId():
		return claimed{}, refuse("ek: this TPM is already enrolled as node %s", byEK.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return claimed{}, err
	}
	c.existing, err = v.o.Store.GetNode(ctx, h.GetNodeId())
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.existing = nil
	case err != nil:
		return claimed{}, err
	}
	if byEK == nil && !v.enrolments.AllowN(now, 1) {
		return claimed{}, refuse("enrolment: too many new TPMs right now; retry later")
	}
	return c, nil
}

// activate is the proof of possession, on every stream: a credential
// only the TPM holding both the EK and the AK can unwrap.
func activate(stream apiv1.Attestation_SessionServer, in *inbox, c claimed) error {
	secret, cred, err := attestation.MakeCredential(c.ek.Public, c.ak, nil)
	if err != nil {
		return refuse("%v", err)
	}
	if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Activation{Activation: &apiv1.ActivationChallenge{
		Credential: cred.Blob, Secret: cred.Secret,
	}}}); err != nil {
		return err
	}
	m, err := in.next()
	if err != nil {
		return err
	}
	if proto.Size(m) > MaxHandshakeMessage || m.GetActivation() == nil {
		return refuse("protocol: expected the activation proof")
	}
	if err := attestation.VerifyActivation(secret, m.GetActivation().GetSecret()); err != nil {
		return refuse("%v", err)
	}
	return nil
}

// admit acts on a proven claim. A known node ID with another TPM is
// flagged for an operator; the enrolled node is left as it is.
func (v *Verifier) admit(ctx context.Context, id string, c claimed) (*store.Node, error) {
	switch {
	case c.existing == nil:
		n, err := v.trust.Enrol(ctx, id, c.ek, c.ak.Public)
		if errors.Is(err, store.ErrConflict) {
			return nil, refuse("node %s or its TPM enrolled concurrently", id)
		}
		return n, err
	case c.existing.EKFingerprint != c.ek.Fingerprint:
		v.trust.FlagConflict(ctx, c.existing, c.ek)
		return nil, refuse("ek: node %s is enrolled with a different TPM; an operator has been alerted", id)
	case bytes.Equal(c.existing.AKPublic, c.ak.Public):
		return c.existing, nil
	}
	return v.trust.NewAK(ctx, id, c.ak.Public)
}

// NodeEventRate and NodeEventBurst bound the install and update events
// one node's stream may send: far above what an agent sends (progress
// every 5 seconds, a few state changes), far below what would flood the
// verifier's log.
const (
	NodeEventRate  = 2
	NodeEventBurst = 20
)

// rounds challenges the node: at once, then at random intervals. Each
// challenge has a single-use nonce and a deadline.
func (v *Verifier) rounds(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox, id string, s *hub.Conn) error {
	var (
		cs       challenges
		next     = time.NewTimer(0)
		deadline = time.NewTimer(time.Hour)
		// events bounds the install and update events the node sends,
		// each of which is logged; dropped counts those over the bound
		// since the last one let through.
		events  = rate.NewLimiter(NodeEventRate, NodeEventBurst)
		dropped int
	)
	deadline.Stop()
	defer next.Stop()
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-in.errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-next.C:
			if cs.open != nil { // still waiting; try again after the deadline
				next.Reset(v.o.Policy.Deadline)
				continue
			}
			c, err := v.challenge(stream)
			if err != nil {
				return err
			}
			cs.open = c
			deadline.Reset(v.o.Policy.Deadline)
		case <-deadline.C:
			if cs.open == nil {
				continue
			}
			v.trust.Demote(ctx, id, trust.Suspect, fmt.Sprintf("missed the %s deadline of challenge %d", v.o.Policy.Deadline, cs.open.id))
			cs.retire("expired")
			next.Reset(v.NextInterval())
		case m := <-s.Out():
			if err := stream.Send(m); err != nil {
				return err
			}
		case m := <-in.recv:
			if m.GetInstallEvent() != nil || m.GetUpdateEvent() != nil {
				if !events.Allow() {
					if dropped++; dropped == 1 {
						v.o.Logger.Warn("install and update events dropped: the node sends more than the verifier takes", "node", id,
							"per_second", NodeEventRate, "burst", NodeEventBurst)
					}
					continue
				}
				dropped = 0
			}
			if e := m.GetInstallEvent(); e != nil {
				v.installEvent(id, e)
				continue
			}
			if e := m.GetUpdateEvent(); e != nil {
				v.updateEvent(id, e, s)
				continue
			}
			if m.GetWorkloadEvent() != nil || m.GetWorkloadLog() != nil || m.GetGpuReport() != nil {
				if err := v.workloadMessage(ctx, id, m); err != nil {
					return err
				}
				continue
			}
			ev := m.GetEvidence()
			if ev == nil {
				v.trust.Demote(ctx, id, trust.Suspect, "protocol violation: unexpected message")
				return refuse("protocol: expected evidence")
			}
			if cs.open != nil && ev.GetChallengeId() == cs.open.id {
				deadline.Stop()
				next.Reset(v.NextInterval())
			}
			if err := v.answer(ctx, stream, id, s, &cs, ev); err != nil {
				return err
			}
		}
	}
}

// challenges are a stream's outstanding challenge and the fate of its
// recent ones.
type challenges struct {
	open  *challenge
	done  map[uint64]string // recent challenge IDs: "answered" or "expired"
	order []uint64
}

// retire closes the open challenge as answered or expired.
func (cs *challenges) retire(how string) {
	if cs.done == nil {
		cs.done = map[uint64]string{}
	}
	cs.done[cs.open.id] = how
	cs.order = append(cs.order, cs.open.id)
	if len(cs.order) > 64 {
		delete(cs.done, cs.order[0])
		cs.order = cs.order[1:]
	}
	cs.open = nil
}

// challenge sends a fresh challenge down the stream.
func (v *Verifier) challenge(stream apiv1.Attestation_SessionServer) (*challenge, error) {
	c := &challenge{id: v.nextID.Add(1), nonce: make([]byte, 32), deadline: v.o.Now().Add(v.o.Policy.Deadline)}
	if _, err := io.ReadFull(v.o.Nonces, c.nonce); err != nil {
		return nil, fmt.Errorf("drawing nonce: %w", err)
	}
	pcrs := make([]uint32, len(v.trust.PCRs()))
	for i, p := range v.trust.PCRs() {
		pcrs[i] = uint32(p)
	}
	return c, stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Challenge{Challenge: &apiv1.Challenge{
		Id: c.id, Nonce: c.nonce, Pcrs: pcrs, DeadlineUnixMs: c.deadline.UnixMilli(),
	}}})
}

// answer records the verdict on evidence: appraised if it answers the
// open challenge, a failure if it answers none (replayed, late or never
// issued). The node hears the verdict.
func (v *Verifier) answer(ctx context.Context, stream apiv1.Attestation_SessionServer, id string, s *hub.Conn, cs *challenges, ev *apiv1.Evidence) error {
	var (
		out trust.Outcome
		err error
		cid = ev.GetChallengeId()
	)
	switch {
	case cs.open != nil && cid == cs.open.id:
		out, err = v.trust.Appraise(ctx, id, cs.open.nonce, ev, s.SetPassed)
		cs.retire("answered")
	case cs.done[cid] == "answered":
		s.SetPassed(false)
		out.Node, out.Token, err = v.trust.FailNonce(ctx, id, fmt.Sprintf("evidence replayed for challenge %d, already answered", cid))
	case cs.done[cid] == "expired":
		s.SetPassed(false)
		out.Node, out.Token, err = v.trust.FailNonce(ctx, id, fmt.Sprintf("challenge %d expired before the evidence arrived", cid))
	default:
		s.SetPassed(false)
		out.Node, out.Token, err = v.trust.FailNonce(ctx, id, fmt.Sprintf("evidence for challenge %d, which was never issued", cid))
	}
	if err != nil {
		return err
	}
	n := out.Node
	v.updateBooted(id, s, out.Build, n)
	return stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: &apiv1.Verdict{
		ChallengeId: cid, State: n.State, Reason: n.Reason,
		TrustedUntilUnixMs: unixMS(n.TrustedUntil), Token: out.Token, RuntimeCheckpoint: out.Checkpoint,
	}}})
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
