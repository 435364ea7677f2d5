package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

type conn struct {
	cancel context.CancelFunc
	// passed is whether this stream's latest appraisal passed: trusted-tier
	// workloads go only to a stream that has itself proven the boot, not
	// to one that merely holds the node's keys.
	passed atomic.Bool
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
	s := v.attach(n.ID, cancel, plan)
	defer v.detach(n.ID, s)
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

// attach makes a proven stream the node's session.
func (v *Verifier) attach(id string, cancel context.CancelFunc, plan helloPlan) *conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.sessions[id]; ok {
		old.cancel() // a node has one session: the newest proven one wins
	}
	s := &conn{cancel: cancel, out: make(chan *apiv1.VerifierMessage, 64), gone: make(chan struct{})}
	v.sessions[id] = s
	v.plans[id] = plan
	if plan.err != "" {
		v.o.Logger.Warn("node's ASK plan unusable: it takes no workloads", "node", id, "err", plan.err)
	}
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

// session returns the node's attached session, or nil.
func (v *Verifier) session(id string) *conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sessions[id]
}

func (v *Verifier) connected(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.sessions[id]
	return ok
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
func (v *Verifier) enrol(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox) (*store.Node, helloPlan, error) {
	m, err := in.next()
	if err != nil {
		return nil, helloPlan{}, err
	}
	if proto.Size(m) > MaxHandshakeMessage {
		return nil, helloPlan{}, refuse("hello: %d bytes, more than %d", proto.Size(m), MaxHandshakeMessage)
	}
	h := m.GetHello()
	if h == nil {
		return nil, helloPlan{}, refuse("protocol: the first message must be a hello")
	}
	if !nodeIDPattern.MatchString(h.GetNodeId()) {
		return nil, helloPlan{}, refuse("node id %q: want 1-128 letters, digits, '.', '_' or '-'", h.GetNodeId())
	}
	if len(h.GetAskPlan()) > 64<<10 || len(h.GetAskPlanError()) > 64<<10 {
		return nil, helloPlan{}, refuse("hello: ASK plan too large")
	}
	plan := helloPlan{h.GetAskPlan(), h.GetAskPlanError()}
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
		v.flagConflict(ctx, existing, ek)
		return nil, plan, refuse("ek: node %s is enrolled with a different TPM; an operator has been alerted", existing.ID)
	}
	if existing != nil && bytes.Equal(existing.AKPublic, ak.Public) {
		return existing, plan, sendEnrolled(stream, existing)
	}
	if existing == nil {
		n := &store.Node{
			ID: h.GetNodeId(), EKFingerprint: ek.Fingerprint, EKPublic: ek.DER, AKPublic: ak.Public,
			Class: ek.Class, State: StateEnrolling, Reason: "enrolled; awaiting first appraisal", Enrolled: now,
		}
		if err := v.o.Store.CreateNode(ctx, n); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, plan, refuse("node %s or its TPM enrolled concurrently", n.ID)
			}
			return nil, plan, err
		}
		n, _, err = v.update(ctx, n.ID, func(n *store.Node) (string, error) { return "", nil })
		if err != nil {
			return nil, plan, err
		}
		v.o.Logger.Info("node enrolled", "node", n.ID, "class", n.Class, "ek", n.EKFingerprint[:16])
		return n, plan, sendEnrolled(stream, n)
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
		return nil, plan, err
	}
	return n, plan, sendEnrolled(stream, n)
}

// flagConflict records, once per EK, that a proven TPM other than the
// enrolled one claimed a node's ID: a verdict in the node's history and a
// published change, with the node's state and reason untouched (a
// software TPM can prove itself too, so the claim demotes nothing).
func (v *Verifier) flagConflict(ctx context.Context, n *store.Node, ek attestation.EK) {
	v.mu.Lock()
	key := n.ID + "/" + ek.Fingerprint
	seen := v.conflicts[key]
	if !seen {
		if len(v.conflicts) >= maxConflicts {
			clear(v.conflicts)
		}
		v.conflicts[key] = true
	}
	v.mu.Unlock()
	msg := fmt.Sprintf("ek-conflict: another %s-class TPM (EK %s…) proved itself under this node's ID and was refused; the enrolled TPM is unchanged", ek.Class, ek.Fingerprint[:16])
	v.o.Logger.Warn("EK conflict", "node", n.ID, "ek", ek.Fingerprint[:16], "class", ek.Class)
	if seen {
		return
	}
	now := v.o.Now()
	if err := v.o.Store.SaveVerdict(ctx, n, store.Verdict{Node: n.ID, Time: now, State: n.State, Reason: msg}); err != nil {
		v.o.Logger.Error("recording EK conflict", "node", n.ID, "err", err)
	}
	v.publish(&apiv1.StateChange{NodeId: n.ID, From: stateProto(n.State), To: stateProto(n.State), Reason: msg, UnixMs: now.UnixMilli()})
}

// maxConflicts bounds the remembered EK conflicts.
const maxConflicts = 4096

func sendEnrolled(stream apiv1.Attestation_SessionServer, n *store.Node) error {
	return stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Enrolled{Enrolled: &apiv1.Enrolled{
		NodeId: n.ID, TrustClass: classProto(n.Class),
	}}})
}

// rounds challenges the node: at once, then at random intervals. Each
// challenge has a single-use nonce and a deadline.
func (v *Verifier) rounds(ctx context.Context, stream apiv1.Attestation_SessionServer, in *inbox, id string, s *conn) error {
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
		case m := <-s.out:
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
				n          *store.Node
				tok        string
				err        error
				cid        = ev.GetChallengeId()
				checkpoint []byte
			)
			switch {
			case open != nil && cid == open.id:
				deadline.Stop()
				n, tok, err = v.appraise(ctx, id, open, ev, s, &checkpoint)
				retire(open.id, "answered")
				open = nil
				next.Reset(v.NextInterval())
			case done[cid] == "answered":
				s.passed.Store(false)
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("evidence replayed for challenge %d, already answered", cid))
			case done[cid] == "expired":
				s.passed.Store(false)
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("challenge %d expired before the evidence arrived", cid))
			default:
				s.passed.Store(false)
				n, tok, err = v.failNonce(ctx, id, fmt.Sprintf("evidence for challenge %d, which was never issued", cid))
			}
			if err != nil {
				return err
			}
			if err := stream.Send(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Verdict{Verdict: &apiv1.Verdict{
				ChallengeId: cid, State: stateProto(n.State), Reason: n.Reason,
				TrustedUntilUnixMs: unixMS(n.TrustedUntil), Token: tok, RuntimeCheckpoint: checkpoint,
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
