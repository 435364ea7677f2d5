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

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

type conn struct {
	cancel context.CancelFunc
	// out queues messages from outside the session's loop (workloads,
	// demotions); gone is closed when the session ends.
	out  chan *apiv1.VerifierMessage
	gone chan struct{}
}

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

	n, err := v.enrol(ctx, stream, in)
	if err != nil {
		var r *refusal
		if errors.As(err, &r) {
			v.o.Logger.Warn("enrolment refused", "reason", r.reason)
			_ = stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Refusal{Refusal: &apiv1.Refusal{Reason: r.reason}}})
			return status.Error(codes.PermissionDenied, r.reason)
		}
		return err
	}
	s := v.attach(n.ID, cancel)
	defer v.detach(n.ID, s)
	err = v.rounds(ctx, stream, in, n.ID, s.out)
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

// next waits for one message until timeout.
func (in *inbox) next(timeout time.Duration) (*apiv1.AgentMessage, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m := <-in.recv:
		return m, nil
	case err := <-in.errc:
		return nil, err
	case <-t.C:
		return nil, refuse("no answer within %s", timeout)
	case <-in.ctx.Done():
		return nil, in.ctx.Err()
	}
}

func (v *Verifier) attach(id string, cancel context.CancelFunc) *conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.sessions[id]; ok {
		old.cancel() // a node has one session: the newest wins
	}
	s := &conn{cancel: cancel, out: make(chan *apiv1.VerifierMessage, 64), gone: make(chan struct{})}
	v.sessions[id] = s
	return s
}

func (v *Verifier) detach(id string, s *conn) {
	v.mu.Lock()
	mine := v.sessions[id] == s
	if mine {
		delete(v.sessions, id)
		delete(v.gpus, id)
	}
	close(s.gone)
	v.mu.Unlock()
	if mine {
		v.demote(context.WithoutCancel(context.Background()), id, StateSuspect, "disconnected")
	}
}

func (v *Verifier) connected(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.sessions[id]
	return ok
}

// enrol runs the Hello and, when the AK is new, credential activation.
func (v *Verifier) enrol(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox) (*store.Node, error) {
	m, err := in.next(v.o.Policy.HandshakeTimeout)
	if err != nil {
		return nil, err
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
	v.mu.Lock()
	v.plans[h.GetNodeId()] = helloPlan{h.GetAskPlan(), h.GetAskPlanError()}
	v.mu.Unlock()
	if e := h.GetAskPlanError(); e != "" {
		v.o.Logger.Warn("node's ASK plan unusable: it takes no workloads", "node", h.GetNodeId(), "err", e)
	}
	now := v.o.Now()
	ek, err := attestation.AppraiseEK(h.GetEkPublic(), h.GetEkCertificate(), v.o.Roots, v.o.Intermediates, now)
	if err != nil {
		return nil, refuse("%v", err)
	}
	ak := attestation.AKParams{
		Public: h.GetAk().GetPublic(), CreateData: h.GetAk().GetCreateData(),
		CreateAttestation: h.GetAk().GetCreateAttestation(), CreateSignature: h.GetAk().GetCreateSignature(),
	}
	if err := attestation.VerifyAK(ak); err != nil {
		return nil, refuse("%v", err)
	}
	byEK, err := v.o.Store.NodeByEK(ctx, ek.Fingerprint)
	switch {
	case err == nil && byEK.ID != h.GetNodeId():
		return nil, refuse("ek: this TPM is already enrolled as node %s", byEK.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	existing, err := v.o.Store.GetNode(ctx, h.GetNodeId())
	switch {
	case err == nil && existing.EKFingerprint != ek.Fingerprint:
		_, _, _ = v.update(ctx, existing.ID, func(n *store.Node) (string, error) {
			n.State, n.Reason = StateUntrusted, "ek: node presented a different TPM (EK "+ek.Fingerprint[:16]+"…)"
			return "", nil
		})
		return nil, refuse("ek: node %s is enrolled with a different TPM", existing.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if existing != nil && bytes.Equal(existing.AKPublic, ak.Public) {
		// A known AK: possession is proven by the first quote.
		return existing, sendEnrolled(stream, existing)
	}

	secret, cred, err := attestation.MakeCredential(ek.Public, ak, nil)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Activation{Activation: &apiv1.ActivationChallenge{
		Credential: cred.Blob, Secret: cred.Secret,
	}}}); err != nil {
		return nil, err
	}
	m, err = in.next(v.o.Policy.HandshakeTimeout)
	if err != nil {
		return nil, err
	}
	if m.GetActivation() == nil {
		return nil, refuse("protocol: expected the activation proof")
	}
	if err := attestation.VerifyActivation(secret, m.GetActivation().GetSecret()); err != nil {
		return nil, refuse("%v", err)
	}

	if existing == nil {
		n := &store.Node{
			ID: h.GetNodeId(), EKFingerprint: ek.Fingerprint, EKPublic: ek.DER, AKPublic: ak.Public,
			Class: ek.Class, State: StateEnrolling, Reason: "enrolled; awaiting first appraisal", Enrolled: now,
		}
		if err := v.o.Store.CreateNode(ctx, n); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, refuse("node %s or its TPM enrolled concurrently", n.ID)
			}
			return nil, err
		}
		n, _, err = v.update(ctx, n.ID, func(n *store.Node) (string, error) { return "", nil })
		if err != nil {
			return nil, err
		}
		v.o.Logger.Info("node enrolled", "node", n.ID, "class", n.Class, "ek", n.EKFingerprint[:16])
		return n, sendEnrolled(stream, n)
	}
	n, _, err := v.update(ctx, existing.ID, func(n *store.Node) (string, error) {
		n.AKPublic = ak.Public
		if n.State == StateTrusted {
			n.State = StateSuspect
		}
		n.Reason = "new AK activated for the same TPM; awaiting appraisal"
		return "", nil
	})
	if err != nil {
		return nil, err
	}
	return n, sendEnrolled(stream, n)
}

func sendEnrolled(stream apiv1.Attestation_SessionServer, n *store.Node) error {
	return stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Enrolled{Enrolled: &apiv1.Enrolled{
		NodeId: n.ID, TrustClass: classProto(n.Class),
	}}})
}

// rounds challenges the node: at once, then at random intervals. Each
// challenge has a single-use nonce and a deadline.
func (v *Verifier) rounds(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox, id string, out <-chan *apiv1.VerifierMessage) error {
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
			pcrs := make([]uint32, len(v.o.Policy.PCRs))
			for i, p := range v.o.Policy.PCRs {
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
			v.demote(ctx, id, StateSuspect, fmt.Sprintf("missed the %s deadline of challenge %d", v.o.Policy.Deadline, open.id))
			open = nil
			next.Reset(v.NextInterval())
		case m := <-out:
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
				v.demote(ctx, id, StateSuspect, "protocol violation: unexpected message")
				return refuse("protocol: expected evidence")
			}
			var (
				n   *store.Node
				tok string
				err error
				cid = ev.GetChallengeId()
			)
			switch {
			case open != nil && cid == open.id:
				deadline.Stop()
				n, tok, err = v.appraise(ctx, id, open, ev)
				retire(open.id, "answered")
				open = nil
				next.Reset(v.NextInterval())
			case done[cid] == "answered":
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("evidence replayed for challenge %d, already answered", cid))
			case done[cid] == "expired":
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("challenge %d expired before the evidence arrived", cid))
			default:
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("evidence for challenge %d, which was never issued", cid))
			}
			if err != nil {
				return err
			}
			if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: &apiv1.Verdict{
				ChallengeId: cid, State: stateProto(n.State), Reason: n.Reason,
				TrustedUntilUnixMs: unixMS(n.TrustedUntil), Token: tok,
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
