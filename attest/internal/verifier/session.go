package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

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
	m, err := in.next()
	if err != nil {
		return nil, hub.Plan{}, err
	}
	if proto.Size(m) > MaxHandshakeMessage {
		return nil, hub.Plan{}, refuse("hello: %d bytes, more than %d", proto.Size(m), MaxHandshakeMessage)
	}
	h := m.GetHello()
	if h == nil {
		return nil, hub.Plan{}, refuse("protocol: the first message must be a hello")
	}
	if !nodeIDPattern.MatchString(h.GetNodeId()) {
		return nil, hub.Plan{}, refuse("node id %q: want 1-128 letters, digits, '.', '_' or '-'", h.GetNodeId())
	}
	if len(h.GetAskPlan()) > 64<<10 || len(h.GetAskPlanError()) > 64<<10 {
		return nil, hub.Plan{}, refuse("hello: ASK plan too large")
	}
	plan := hub.Plan{Plan: h.GetAskPlan(), Err: h.GetAskPlanError()}
	now := v.o.Now()
	ek, err := attestation.AppraiseEK(h.GetEkPublic(), h.GetEkCertificate(), v.o.Roots, v.o.Intermediates, now)
	if err != nil {
		return nil, plan, refuse("%v", err)
	}
	if ek.Class != attestation.ClassHardware && v.o.Policy.RefuseDev {
		return nil, plan, refuse("ek: dev-class TPM (no certificate from a known TPM manufacturer); this verifier enrols hardware-class TPMs only")
	}
	ak := attestation.AKParams{
		Public: h.GetAk().GetPublic(), CreateData: h.GetAk().GetCreateData(),
		CreateAttestation: h.GetAk().GetCreateAttestation(), CreateSignature: h.GetAk().GetCreateSignature(),
	}
	if err := attestation.VerifyAK(ak); err != nil {
		return nil, plan, refuse("%v", err)
	}
	byEK, err := v.o.Store.NodeByEK(ctx, ek.Fingerprint)
	switch {
	case err == nil && byEK.ID != h.GetNodeId():
		return nil, plan, refuse("ek: this TPM is already enrolled as node %s", byEK.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, plan, err
	}
	existing, err := v.o.Store.GetNode(ctx, h.GetNodeId())
	switch {
	case errors.Is(err, store.ErrNotFound):
		existing = nil
	case err != nil:
		return nil, plan, err
	}
	if byEK == nil && !v.enrolments.AllowN(now, 1) {
		return nil, plan, refuse("enrolment: too many new TPMs right now; retry later")
	}

	// Proof of possession, on every stream.
	secret, cred, err := attestation.MakeCredential(ek.Public, ak, nil)
	if err != nil {
		return nil, plan, refuse("%v", err)
	}
	if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Activation{Activation: &apiv1.ActivationChallenge{
		Credential: cred.Blob, Secret: cred.Secret,
	}}}); err != nil {
		return nil, plan, err
	}
	m, err = in.next()
	if err != nil {
		return nil, plan, err
	}
	if proto.Size(m) > MaxHandshakeMessage || m.GetActivation() == nil {
		return nil, plan, refuse("protocol: expected the activation proof")
	}
	if err := attestation.VerifyActivation(secret, m.GetActivation().GetSecret()); err != nil {
		return nil, plan, refuse("%v", err)
	}

	// The stream holds this EK and AK. A known node ID with another TPM is
	// flagged for an operator; the enrolled node is left as it is.
	if existing != nil && existing.EKFingerprint != ek.Fingerprint {
		v.trust.FlagConflict(ctx, existing, ek)
		return nil, plan, refuse("ek: node %s is enrolled with a different TPM; an operator has been alerted", existing.ID)
	}
	if existing != nil && bytes.Equal(existing.AKPublic, ak.Public) {
		return existing, plan, sendEnrolled(stream, existing)
	}
	if existing == nil {
		n, err := v.trust.Enrol(ctx, h.GetNodeId(), ek, ak.Public)
		if errors.Is(err, store.ErrConflict) {
			return nil, plan, refuse("node %s or its TPM enrolled concurrently", h.GetNodeId())
		}
		if err != nil {
			return nil, plan, err
		}
		return n, plan, sendEnrolled(stream, n)
	}
	n, err := v.trust.NewAK(ctx, existing.ID, ak.Public)
	if err != nil {
		return nil, plan, err
	}
	return n, plan, sendEnrolled(stream, n)
}

func sendEnrolled(stream apiv1.Attestation_SessionServer, n *store.Node) error {
	return stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Enrolled{Enrolled: &apiv1.Enrolled{
		NodeId: n.ID, TrustClass: trust.ClassProto(n.Class),
	}}})
}

// rounds challenges the node: at once, then at random intervals. Each
// challenge has a single-use nonce and a deadline.
func (v *Verifier) rounds(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox, id string, s *hub.Conn) error {
	var (
		open     *challenge            // the outstanding challenge
		done     = map[uint64]string{} // recent challenge IDs: "answered" or "expired"
		order    []uint64
		next     = time.NewTimer(0)
		deadline = time.NewTimer(time.Hour)
	)
	deadline.Stop()
	defer next.Stop()
	defer deadline.Stop()
	retire := func(id uint64, how string) {
		done[id] = how
		order = append(order, id)
		if len(order) > 64 {
			delete(done, order[0])
			order = order[1:]
		}
	}
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
			if open != nil { // still waiting; try again after the deadline
				next.Reset(v.o.Policy.Deadline)
				continue
			}
			c := &challenge{id: v.nextID.Add(1), nonce: make([]byte, 32), deadline: v.o.Now().Add(v.o.Policy.Deadline)}
			if _, err := io.ReadFull(v.o.Nonces, c.nonce); err != nil {
				return fmt.Errorf("drawing nonce: %w", err)
			}
			pcrs := make([]uint32, len(v.trust.PCRs()))
			for i, p := range v.trust.PCRs() {
				pcrs[i] = uint32(p)
			}
			if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Challenge{Challenge: &apiv1.Challenge{
				Id: c.id, Nonce: c.nonce, Pcrs: pcrs, DeadlineUnixMs: c.deadline.UnixMilli(),
			}}}); err != nil {
				return err
			}
			open = c
			deadline.Reset(v.o.Policy.Deadline)
		case <-deadline.C:
			if open == nil {
				continue
			}
			retire(open.id, "expired")
			v.trust.Demote(ctx, id, trust.Suspect, fmt.Sprintf("missed the %s deadline of challenge %d", v.o.Policy.Deadline, open.id))
			open = nil
			next.Reset(v.NextInterval())
		case m := <-s.Out():
			if err := stream.Send(m); err != nil {
				return err
			}
		case m := <-in.recv:
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
			var (
				out trust.Outcome
				err error
				cid = ev.GetChallengeId()
			)
			switch {
			case open != nil && cid == open.id:
				deadline.Stop()
				out, err = v.trust.Appraise(ctx, id, open.nonce, ev, s.SetPassed)
				retire(open.id, "answered")
				open = nil
				next.Reset(v.NextInterval())
			case done[cid] == "answered":
				s.SetPassed(false)
				out.Node, out.Token, err = v.trust.FailNonce(ctx, id, fmt.Sprintf("evidence replayed for challenge %d, already answered", cid))
			case done[cid] == "expired":
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
			if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: &apiv1.Verdict{
				ChallengeId: cid, State: n.State, Reason: n.Reason,
				TrustedUntilUnixMs: unixMS(n.TrustedUntil), Token: out.Token, RuntimeCheckpoint: out.Checkpoint,
			}}}); err != nil {
				return err
			}
		}
	}
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
