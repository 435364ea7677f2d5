package verifier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/softtpm"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
	"github.com/rigos/rigos/pkg/tpm"
)

// Hostile clients against the real verifier over gRPC/TLS. Each test
// tries what a stranger (or the rig's owner) can do with public values:
// a node's EK public key and AK parameters can be read off the TPM bus
// or the node's disk; a software TPM proves possession of its own keys.

// helloAs is a hello claiming node id with n's public EK and AK values.
func helloAs(t *testing.T, id string, n session.TPM, plan string) *apiv1.AgentMessage {
	t.Helper()
	ek, err := n.EKPublic()
	if err != nil {
		t.Fatal(err)
	}
	ak := n.AKParams()
	return &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{
		NodeId: id, EkPublic: ek, EkCertificate: n.EKCertificate(), AskPlan: plan,
		Ak: &apiv1.AKParameters{Public: ak.Public, CreateData: ak.CreateData, CreateAttestation: ak.CreateAttestation, CreateSignature: ak.CreateSignature},
	}}}
}

// impostor opens a stream, says hello and answers the activation
// challenge with a guess. It returns the first message that is neither
// an activation challenge nor an enrolment, or the stream's error.
func (h *harness) impostor(hello *apiv1.AgentMessage) (*apiv1.VerifierMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := h.client.Session(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(hello); err != nil {
		return nil, err
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return nil, err
		}
		switch {
		case m.GetActivation() != nil:
			guess := &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Activation{Activation: &apiv1.ActivationProof{Secret: make([]byte, 32)}}}
			if err := s.Send(guess); err != nil {
				return nil, err
			}
		case m.GetEnrolled() != nil:
			// An attached impostor would now get challenges and workloads.
		default:
			return m, nil
		}
	}
}

func softTPM(t *testing.T) *softtpm.TPM {
	t.Helper()
	s, err := softtpm.New(devboot.Default())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// node returns the node as the admin API shows it.
func (h *harness) node(id string) *apiv1.NodeDetail {
	h.t.Helper()
	d, err := h.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: id})
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// A hello repeating a trusted node's EK and AK is not attached: it must
// prove possession first, and cannot. The genuine session stays.
func TestPublicValuesDoNotAttach(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	stop := h.run("rig-1", n, nil)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	m, err := h.impostor(helloAs(t, "rig-1", n.Att, `{"version":1,"cpus":1}`))
	if m.GetRefusal() == nil && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("impostor got %v, %v; want a refusal", m, err)
	}
	if m.GetChallenge() != nil {
		t.Fatal("impostor was attached and challenged")
	}
	// The genuine session was not replaced: it keeps passing spot checks,
	// and nothing the impostor said was kept.
	h.await("rig-1", func(c *apiv1.StateChange) bool { return strings.HasPrefix(c.GetReason(), "appraisal passed") })
	d := h.node("rig-1")
	if !d.GetNode().GetConnected() || d.GetNode().GetState() != apiv1.NodeState_NODE_STATE_TRUSTED {
		t.Fatalf("rig-1 after the impostor: %v", d.GetNode())
	}
	if d.GetAskPlan() != "" {
		t.Errorf("impostor's ASK plan was kept: %q", d.GetAskPlan())
	}
	stop()
}

// Another TPM claiming a trusted node's ID cannot demote it, whether it
// fails the activation or proves its own (software) keys.
func TestForeignEKCannotDemote(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	h.run("rig-1", n, nil)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	// A software EK and AK it holds: the activation succeeds.
	soft := softTPM(t)
	err := session.Run(context.Background(), h.client, session.Node{ID: "rig-1", TPM: soft, RuntimeLog: func() ([]byte, error) { return nil, nil }})
	if !errors.Is(err, session.ErrRefused) || !strings.Contains(err.Error(), "different TPM") {
		t.Fatalf("software TPM as rig-1: %v, want refused", err)
	}
	// Another node's public values, without its TPM: the activation fails.
	if m, err := h.impostor(helloAs(t, "rig-1", softTPM(t), "")); m.GetRefusal() == nil && err == nil {
		t.Fatalf("impostor got %v", m)
	}
	// Not even a moment of demotion (that alone would kill the node's
	// trusted-tier work): every change up to the next passing appraisal
	// keeps it trusted.
	h.await("rig-1", func(c *apiv1.StateChange) bool {
		if c.GetTo() != apiv1.NodeState_NODE_STATE_TRUSTED {
			t.Fatalf("rig-1 moved to %v: %s", c.GetTo(), c.GetReason())
		}
		return strings.HasPrefix(c.GetReason(), "appraisal passed")
	})
	d := h.node("rig-1")
	if d.GetNode().GetState() != apiv1.NodeState_NODE_STATE_TRUSTED || !d.GetNode().GetConnected() {
		t.Fatalf("rig-1 after foreign EKs: %v; want trusted and connected", d.GetNode())
	}
}

// A stream that never finishes its handshake is cut at the handshake
// deadline, and only so many may be open at once.
func TestHandshakesAreBounded(t *testing.T) {
	p := testPolicy()
	p.HandshakeTimeout = time.Second
	p.MaxHandshakes = 2
	h := newHarness(t, p, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var idle []apiv1.Attestation_SessionClient
	for range 2 {
		s, err := h.client.Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// gRPC opens the stream lazily: a first message makes the server see it.
		if err := s.Send(helloAs(t, fmt.Sprint("idle-", len(idle)), softTPM(t), "")); err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || m.GetActivation() == nil {
			t.Fatalf("idle stream: %v, %v; want an activation challenge", m, err)
		}
		idle = append(idle, s)
	}
	// Both slots are taken by streams that never answer.
	s, err := h.client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&apiv1.AgentMessage{})
	if _, err := s.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third handshake: %v, want ResourceExhausted", err)
	}
	// The idle ones are cut at the deadline.
	for _, s := range idle {
		m, err := s.Recv()
		if m.GetRefusal() == nil || !strings.Contains(m.GetRefusal().GetReason(), "handshake") {
			t.Fatalf("idle stream: %v, %v; want refused for its handshake", m, err)
		}
	}
}

// New TPMs enrol at a bounded rate; the production switch refuses the
// dev class outright.
func TestEnrolmentLimits(t *testing.T) {
	p := testPolicy()
	p.EnrolRate, p.EnrolBurst = 1e-9, 1
	h := newHarness(t, p, "")
	soft := func() session.TPM { return softTPM(t) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- session.Run(ctx, h.client, session.Node{ID: "soft-1", TPM: soft(), RuntimeLog: func() ([]byte, error) { return nil, nil }})
	}()
	h.await("soft-1", to(apiv1.NodeState_NODE_STATE_ENROLLING))
	err := session.Run(context.Background(), h.client, session.Node{ID: "soft-2", TPM: soft(), RuntimeLog: func() ([]byte, error) { return nil, nil }})
	if !errors.Is(err, session.ErrRefused) || !strings.Contains(err.Error(), "too many new TPMs") {
		t.Fatalf("second enrolment: %v, want refused by the rate limit", err)
	}
	if _, err := h.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: "soft-2"}); status.Code(err) != codes.NotFound {
		t.Errorf("refused node was stored: %v", err)
	}

	p = testPolicy()
	p.RefuseDev = true
	h = newHarness(t, p, "")
	err = session.Run(context.Background(), h.client, session.Node{ID: "soft-3", TPM: soft(), RuntimeLog: func() ([]byte, error) { return nil, nil }})
	if !errors.Is(err, session.ErrRefused) || !strings.Contains(err.Error(), "dev-class") {
		t.Fatalf("dev-class TPM with RefuseDev: %v, want refused", err)
	}
}

// A node (an untrusted one, say) reporting events for workloads that were
// never sent to it, or flooding one that was, stores nothing beyond the
// bound.
func TestWorkloadEventsOnlyForSentWorkloads(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	echo := newEcho()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Workloads: echo, Outbox: echo.out})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	run, err := h.admin.RunWorkload(ctx, &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "job-1", Image: "r.example/a@sha256:abc", TrustedTier: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run.Recv(); err != nil { // preparing: the node has it
		t.Fatal(err)
	}
	for i := range 200 {
		echo.event("never-sent", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING, strings.Repeat("x", 64<<10), 0)
		echo.event("job-1", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING, fmt.Sprint("flood ", i), 0)
	}
	echo.event("job-1", apiv1.WorkloadState_WORKLOAD_STATE_EXITED, "", 0)
	// A stream's messages are handled one after another: once a log line
	// sent after the flood reaches its watcher, every flood message has
	// been handled.
	drained := sentinel(t, h, echo)
	drained()
	d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1", History: 1000})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range d.GetWorkloads() {
		count[e.GetId()]++
	}
	if count["never-sent"] != 0 || count["job-1"] > hub.MaxWorkloadEvents {
		t.Fatalf("stored workload events: %v; want none for never-sent and at most %d for job-1", count, hub.MaxWorkloadEvents)
	}
	// The ended workload's counter does not stay in memory; the store
	// still bounds any later event.
	if left := h.v.hub.Counting(); left != 0 {
		t.Errorf("%d nodes still hold in-memory event counters after their workloads ended", left)
	}
	echo.event("job-1", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING, "after the end", 0)
	drained()
	if d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1", History: 1000}); err == nil {
		n := 0
		for _, e := range d.GetWorkloads() {
			if e.GetId() == "job-1" {
				n++
			}
		}
		if n > hub.MaxWorkloadEvents {
			t.Errorf("job-1 has %d stored events after it ended, want at most %d", n, hub.MaxWorkloadEvents)
		}
	}
}

// A node that compacts its runtime log with the checkpoints its trusted
// verdicts carry keeps passing, round after round, while its log stays
// small; a checkpoint it makes up itself fails.
func TestRuntimeLogCheckpoints(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	rec, err := measure.NewRecorder(n.RuntimeLog, func(pcr int, d []byte) error { return tpm.Extend(n.Sim, pcr, d) })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	compactions, forge := 0, false
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog,
		OnVerdict: func(v *apiv1.Verdict) {
			mu.Lock()
			defer mu.Unlock()
			if forge {
				return
			}
			if cp := v.GetRuntimeCheckpoint(); len(cp) > 0 {
				if err := rec.Compact(cp); err != nil {
					t.Errorf("Compact(issued checkpoint) = %v", err)
				}
				compactions++
			}
			// Workloads keep coming between rounds.
			if _, err := rec.Record(measure.KindWorkload, measure.Workload{ID: fmt.Sprint("w", compactions), Digest: "sha256:abc"}.Encode()); err != nil {
				t.Error(err)
			}
		}})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	for range 6 {
		h.await("rig-1", func(c *apiv1.StateChange) bool {
			if c.GetTo() != apiv1.NodeState_NODE_STATE_TRUSTED {
				t.Fatalf("rig-1 moved to %v: %s", c.GetTo(), c.GetReason())
			}
			return strings.HasPrefix(c.GetReason(), "appraisal passed")
		})
	}
	b, _ := n.ReadRuntimeLog()
	events, err := measure.Parse(b)
	if err != nil || len(events) == 0 || events[0].Kind != measure.KindCheckpoint || len(events) > 4 {
		t.Fatalf("runtime log after compactions: %d records (first %q), %v; want a checkpoint and few records", len(events), events[0].Kind, err)
	}
	// The node now invents a checkpoint of its own: the next round fails.
	mu.Lock()
	forge = true
	own := measure.Checkpoint{Boot: 0, Events: 1, PCR: strings.Repeat("00", 32)}.Encode()
	os.WriteFile(n.RuntimeLog, measure.NewEvent(0, measure.KindCheckpoint, own).Encode(), 0o600)
	mu.Unlock()
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.Contains(c.GetReason(), "checkpoint") {
		t.Errorf("reason = %q, want the checkpoint named", c.GetReason())
	}
}

// sentinel returns a function that sends a log line for a workload
// nobody runs through echo's stream and waits until the verifier has
// handled it, and with it everything the stream carried before.
func sentinel(t *testing.T, h *harness, echo *echoNode) func() {
	t.Helper()
	ch, stop := h.v.hub.WatchWorkload("rig-1", "sentinel")
	t.Cleanup(stop)
	n := 0
	return func() {
		t.Helper()
		n++
		line := fmt.Sprint("sentinel ", n)
		echo.emit(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadLog{WorkloadLog: &apiv1.WorkloadLog{Id: "sentinel", Data: []byte(line)}}})
		timeout := time.After(wait)
		for {
			select {
			case u := <-ch:
				if string(u.GetLog().GetData()) == line {
					return
				}
			case <-timeout:
				t.Fatalf("the verifier did not handle %q within %s", line, wait)
			}
		}
	}
}
