package verifier

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
	"github.com/rigos/rigos/pkg/tpm"
)

// echoNode is a node's workload side that answers from the messages it
// gets: the real manager (agent/internal/workload) is tested on its own
// and, with containerd, in the VM tests.
type echoNode struct {
	// out is the node's outbox, as the agent's: the session attaches it.
	out      *session.Outbox
	mu       sync.Mutex
	archive  []byte
	verdicts []*apiv1.Verdict
}

func newEcho() *echoNode { return &echoNode{out: session.NewOutbox(nil)} }

func (e *echoNode) emit(m *apiv1.AgentMessage) { e.out.Send(m) }

func (e *echoNode) event(id string, s apiv1.WorkloadState, reason string, code int32) {
	e.emit(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadEvent{WorkloadEvent: &apiv1.WorkloadEvent{
		Id: id, State: s, Reason: reason, ExitCode: code, ImageDigest: "sha256:abc",
	}}})
}

func (e *echoNode) Handle(m *apiv1.VerifierMessage) {
	switch {
	case m.GetStartWorkload() != nil:
		id := m.GetStartWorkload().GetSpec().GetId()
		e.event(id, apiv1.WorkloadState_WORKLOAD_STATE_PREPARING, "", 0)
		if !m.GetStartWorkload().GetSpec().GetImageArchive() {
			e.event(id, apiv1.WorkloadState_WORKLOAD_STATE_RUNNING, "", 0)
		}
	case m.GetImageChunk() != nil:
		c := m.GetImageChunk()
		e.mu.Lock()
		e.archive = append(e.archive, c.GetData()...)
		n := len(e.archive)
		e.mu.Unlock()
		if c.GetLast() {
			e.emit(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadLog{WorkloadLog: &apiv1.WorkloadLog{Id: c.GetWorkloadId(), Data: []byte("got the image\n")}}})
			e.event(c.GetWorkloadId(), apiv1.WorkloadState_WORKLOAD_STATE_EXITED, "", int32(n%200))
		}
	case m.GetStopWorkload() != nil:
		e.event(m.GetStopWorkload().GetId(), apiv1.WorkloadState_WORKLOAD_STATE_KILLED, m.GetStopWorkload().GetReason(), 137)
	}
}

func (e *echoNode) verdict(v *apiv1.Verdict) {
	e.mu.Lock()
	e.verdicts = append(e.verdicts, v)
	e.mu.Unlock()
}

func collectRun(t *testing.T, s apiv1.Admin_RunWorkloadClient) ([]*apiv1.WorkloadEvent, string, error) {
	t.Helper()
	var events []*apiv1.WorkloadEvent
	var out strings.Builder
	for {
		u, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return events, out.String(), nil
		}
		if err != nil {
			return events, out.String(), err
		}
		if e := u.GetEvent(); e != nil {
			events = append(events, e)
		}
		out.Write(u.GetLog().GetData())
	}
}

func TestWorkloadRelay(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	// The node measured a workload before this session: the appraisal
	// names it.
	rec, err := measure.NewRecorder(n.RuntimeLog, func(pcr int, d []byte) error { return tpm.Extend(n.Sim, pcr, d) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Record(measure.KindWorkload, measure.Workload{ID: "early", Digest: "sha256:abc", Config: "sha256:cfg"}.Encode()); err != nil {
		t.Fatal(err)
	}
	echo := newEcho()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Workloads: echo, Outbox: echo.out, OnVerdict: echo.verdict,
		AskPlan: `{"version":1,"cpus":4}`})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetAskPlan() != `{"version":1,"cpus":4}` {
		t.Errorf("ASK plan at the verifier: %q", d.GetAskPlan())
	}
	if w := d.GetHistory()[0].GetWorkloads(); len(w) != 1 || w[0] != "early@sha256:abc" {
		t.Errorf("verdict workloads = %v, want early@sha256:abc", w)
	}

	// An archive bigger than one chunk reaches the node whole.
	archive := make([]byte, 2*admin.ImageChunkSize+123)
	for i := range archive {
		archive[i] = byte(i)
	}
	s, err := h.admin.RunWorkload(ctx, &apiv1.RunWorkloadRequest{NodeId: "rig-1", ImageArchive: archive,
		Spec: &apiv1.WorkloadSpec{Id: "w1", ImageArchive: true, TrustedTier: true}})
	if err != nil {
		t.Fatal(err)
	}
	events, out, err := collectRun(t, s)
	if err != nil || len(events) != 2 || events[1].GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED ||
		events[1].GetExitCode() != int32(len(archive)%200) || out != "got the image\n" {
		t.Fatalf("run: %v %v %q", events, err, out)
	}
	echo.mu.Lock()
	same := string(echo.archive) == string(archive)
	echo.mu.Unlock()
	if !same {
		t.Error("the node received a different archive")
	}

	// Bad requests are refused before anything reaches the node.
	for name, req := range map[string]*apiv1.RunWorkloadRequest{
		"bad id":           {NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "../etc", Image: "x"}},
		"archive missing":  {NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "a", ImageArchive: true}},
		"unexpected bytes": {NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "a", Image: "x"}, ImageArchive: []byte{1}},
		"no image":         {NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "a"}},
		"unknown node":     {NodeId: "rig-9", Spec: &apiv1.WorkloadSpec{Id: "a", Image: "x"}},
	} {
		s, err := h.admin.RunWorkload(ctx, req)
		if err == nil {
			_, _, err = collectRun(t, s)
		}
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
			t.Errorf("%s: %v, want InvalidArgument or NotFound", name, err)
		}
	}

	// Stop: the node's final event comes back and is recorded.
	s, err = h.admin.RunWorkload(ctx, &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "w2", Image: "reg/x:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := s.Recv(); err != nil || u.GetEvent().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_PREPARING {
		t.Fatalf("first update %v %v", u, err)
	}
	e, err := h.admin.StopWorkload(ctx, &apiv1.StopWorkloadRequest{NodeId: "rig-1", WorkloadId: "w2", Reason: "customer cancelled"})
	if err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED || e.GetReason() != "customer cancelled" {
		t.Fatalf("stop = %v, %v", e, err)
	}

	// Revocation reaches the node at once as an untrusted verdict, and
	// trusted-tier work is refused from then on.
	if _, err := h.admin.Revoke(ctx, &apiv1.RevokeRequest{NodeId: "rig-1", Reason: "fraud report"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		echo.mu.Lock()
		var last *apiv1.Verdict
		if len(echo.verdicts) > 0 {
			last = echo.verdicts[len(echo.verdicts)-1]
		}
		echo.mu.Unlock()
		if last.GetState() == apiv1.NodeState_NODE_STATE_UNTRUSTED && strings.Contains(last.GetReason(), "fraud report") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node never heard of its revocation: %v", last)
		}
		time.Sleep(10 * time.Millisecond) // polling the fake node, bounded
	}
	s, err = h.admin.RunWorkload(ctx, &apiv1.RunWorkloadRequest{NodeId: "rig-1", Spec: &apiv1.WorkloadSpec{Id: "w3", Image: "x", TrustedTier: true}})
	if err == nil {
		_, _, err = collectRun(t, s)
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("trusted-tier run on a revoked node: %v", err)
	}
	d, err = h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil {
		t.Fatal(err)
	}
	if w := d.GetWorkloads(); len(w) < 4 || w[0].GetId() != "w2" || w[0].GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
		t.Errorf("recorded workload events = %v", w)
	}
}

// The GPU inventory digest in the runtime log is pinned at the first
// pass; another digest later is "gpu-changed" until an operator accepts
// it. The node's GPU report shows in GetNode while it is connected.
func TestGPUInventoryPinned(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	rec, err := measure.NewRecorder(n.RuntimeLog, func(pcr int, d []byte) error { return tpm.Extend(n.Sim, pcr, d) })
	if err != nil {
		t.Fatal(err)
	}
	measureGPUs := func(digest string) {
		if _, err := rec.Record(measure.KindGPU, measure.GPUInventory{Count: 8, Digest: digest}.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	first, swapped := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	measureGPUs(first)
	runWith := func(echo *echoNode) func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			session.Run(ctx, h.client, session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Workloads: echo, Outbox: echo.out})
		}()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		return stop
	}
	echo := newEcho()
	stop := runWith(echo)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	echo.emit(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_GpuReport{GpuReport: &apiv1.GPUReport{
		InventoryDigest: first, Gpus: []*apiv1.GPU{{Index: 0, Uuid: "GPU-1", Healthy: false, Problems: []string{"Xid 79"}}},
	}}})
	deadline := time.Now().Add(wait)
	for {
		d, err := h.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: "rig-1"})
		if err != nil {
			t.Fatal(err)
		}
		if g := d.GetGpus().GetGpus(); len(g) == 1 && g[0].GetProblems()[0] == "Xid 79" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("GPU report not shown")
		}
		time.Sleep(10 * time.Millisecond) // polling the verifier, bounded
	}
	stop()

	measureGPUs(swapped) // a GPU swapped while the node was away
	runWith(newEcho())
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.HasPrefix(c.GetReason(), string(attestation.CheckGPUPins)) {
		t.Fatalf("reason = %q, want %s", c.GetReason(), attestation.CheckGPUPins)
	}
	if _, err := h.admin.AcceptFirmware(context.Background(), &apiv1.NodeRequest{NodeId: "rig-1"}); err != nil {
		t.Fatal(err)
	}
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
}

// A node that stops answering is demoted at the deadline, and told so at
// once (it kills its trusted-tier workloads on that verdict).
func TestMissedDeadlineTellsTheNode(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	var answered atomic.Bool
	echo := newEcho()
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Workloads: echo, Outbox: echo.out, OnVerdict: echo.verdict,
		OnChallenge: func(_ *apiv1.Challenge, ev *apiv1.Evidence) *apiv1.Evidence {
			if answered.Swap(true) {
				return nil // silent from the second challenge on
			}
			return ev
		}})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_SUSPECT))
	deadline := time.Now().Add(wait)
	for {
		echo.mu.Lock()
		last := echo.verdicts[len(echo.verdicts)-1]
		echo.mu.Unlock()
		if last.GetState() == apiv1.NodeState_NODE_STATE_SUSPECT && last.GetReason() == c.GetReason() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node's last verdict %v, want suspect: %s", last, c.GetReason())
		}
		time.Sleep(10 * time.Millisecond) // polling the fake node, bounded
	}
}
