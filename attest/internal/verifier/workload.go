package verifier

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// ImageChunkSize is the size of the ImageChunk messages an archive is
// cut into on the node's stream.
const ImageChunkSize = 1 << 20

// push queues a message for a connected node without waiting; it reports
// false when the node is not connected or its queue is full.
func (v *Verifier) push(id string, m *apiv1.VerifierMessage) bool {
	v.mu.Lock()
	c, ok := v.sessions[id]
	v.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case c.out <- m:
		return true
	default:
		v.o.Logger.Warn("node queue full; message dropped", "node", id)
		return false
	}
}

// send queues a message for a connected node, waiting for room.
func (v *Verifier) send(ctx context.Context, id string, m *apiv1.VerifierMessage) error {
	c := v.session(id)
	if c == nil {
		return status.Errorf(codes.Unavailable, "node %s is not connected", id)
	}
	return sendTo(ctx, id, c, m)
}

// sendTo queues a message on one session, waiting for room; it fails
// once that session has ended, whatever replaced it.
func sendTo(ctx context.Context, id string, c *conn, m *apiv1.VerifierMessage) error {
	select {
	case c.out <- m:
		return nil
	case <-c.gone:
		return status.Errorf(codes.Unavailable, "node %s disconnected", id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

type workloadKey struct{ node, id string }

// watchWorkload subscribes to a workload's updates from its node.
func (v *Verifier) watchWorkload(node, id string) (chan *apiv1.WorkloadUpdate, func()) {
	ch := make(chan *apiv1.WorkloadUpdate, 256)
	k := workloadKey{node, id}
	v.mu.Lock()
	v.workloads[k] = append(v.workloads[k], ch)
	v.mu.Unlock()
	return ch, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		subs := v.workloads[k]
		for i, c := range subs {
			if c == ch {
				subs = append(subs[:i], subs[i+1:]...)
				break
			}
		}
		if len(subs) == 0 {
			delete(v.workloads, k)
		} else {
			v.workloads[k] = subs
		}
	}
}

// workloadMessage handles a workload event or log line from a node: it
// records events and passes both to the workload's watchers.
// MaxWorkloadEvents bounds the events stored for one workload (a
// workload reports a handful: preparing, running, then how it ended).
const MaxWorkloadEvents = 16

// maxEventText bounds the free text of a stored workload event.
const maxEventText = 1024

func (v *Verifier) workloadMessage(ctx context.Context, node string, m *apiv1.AgentMessage) error {
	var u *apiv1.WorkloadUpdate
	var id string
	switch {
	case m.GetWorkloadEvent() != nil:
		e := m.GetWorkloadEvent()
		id = e.GetId()
		if terminal(e.GetState()) {
			// The workload has ended: its counter need not stay in memory
			// (later events are counted from the store).
			defer v.forgetSent(node, id)
		}
		ok, err := v.takeEvent(ctx, node, id)
		if err != nil {
			return err
		}
		if !ok {
			v.o.Logger.Warn("workload event dropped: not a workload sent to this node, or too many events", "node", node, "workload", truncate(id, 64))
			return nil
		}
		if err := v.o.Store.SaveWorkloadEvent(ctx, store.WorkloadEvent{
			Node: node, Workload: id, Time: v.o.Now(), State: e.GetState().Name(),
			Reason: truncate(e.GetReason(), maxEventText), ExitCode: int(e.GetExitCode()), OOMKilled: e.GetOomKilled(),
			ImageDigest: truncate(e.GetImageDigest(), 128),
		}); err != nil {
			return err
		}
		v.o.Logger.Info("workload", "node", node, "workload", e.GetId(), "state", e.GetState().Name(),
			"reason", truncate(e.GetReason(), maxEventText), "exit", e.GetExitCode(), "oom", e.GetOomKilled())
		u = &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Event{Event: e}}
	case m.GetGpuReport() != nil:
		v.gpuReport(node, m.GetGpuReport())
		return nil
	case m.GetWorkloadLog() != nil:
		id = m.GetWorkloadLog().GetId()
		u = &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Log{Log: m.GetWorkloadLog()}}
	default:
		return nil
	}
	v.mu.Lock()
	subs := append([]chan *apiv1.WorkloadUpdate(nil), v.workloads[workloadKey{node, id}]...)
	v.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- u:
		default: // a slow watcher loses output, never the node's session
		}
	}
	return nil
}

// sentWorkload records that workload id was sent to node: its events
// will be taken.
func (v *Verifier) sentWorkload(ctx context.Context, node, id string) error {
	if err := v.o.Store.SaveWorkloadEvent(ctx, store.WorkloadEvent{
		Node: node, Workload: id, Time: v.o.Now(), State: "sent", Reason: "sent to the node",
	}); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sent[node] == nil {
		v.sent[node] = map[string]int{}
	}
	v.sent[node][id] = 1
	return nil
}

// takeEvent reports whether an event for workload id from node is to be
// stored: the workload was sent to that node (now, or before a verifier
// restart, as the store says) and has not used up MaxWorkloadEvents.
func (v *Verifier) takeEvent(ctx context.Context, node, id string) (bool, error) {
	v.mu.Lock()
	n, ok := v.sent[node][id]
	v.mu.Unlock()
	if !ok {
		c, err := v.o.Store.WorkloadEventCount(ctx, node, id)
		if err != nil || c == 0 {
			return false, err
		}
		n = c
	}
	if n >= MaxWorkloadEvents {
		return false, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sent[node] == nil {
		v.sent[node] = map[string]int{}
	}
	v.sent[node][id] = n + 1
	return true, nil
}

// forgetSent drops the in-memory event counter of an ended workload.
func (v *Verifier) forgetSent(node, id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.sent[node], id)
	if len(v.sent[node]) == 0 {
		delete(v.sent, node)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func terminal(s apiv1.WorkloadState) bool {
	return s == apiv1.WorkloadState_WORKLOAD_STATE_EXITED || s == apiv1.WorkloadState_WORKLOAD_STATE_KILLED ||
		s == apiv1.WorkloadState_WORKLOAD_STATE_FAILED
}

// RunWorkload implements Admin: it checks the request, sends the
// workload (and its image archive) down the node's stream and relays
// the node's events and output until the workload ends.
func (v *Verifier) RunWorkload(r *apiv1.RunWorkloadRequest, stream apiv1.Admin_RunWorkloadServer) error {
	ctx := stream.Context()
	spec := r.GetSpec()
	if err := r.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	n, err := v.o.Store.GetNode(ctx, r.GetNodeId())
	if err != nil {
		return grpcErr(err)
	}
	if spec.GetTrustedTier() && (n.State != StateTrusted || !v.o.Now().Before(n.TrustedUntil)) {
		return status.Errorf(codes.FailedPrecondition, "node %s is not trusted (%s: %s)", n.ID, n.State, n.Reason)
	}
	c := v.session(n.ID)
	if c == nil {
		return status.Errorf(codes.Unavailable, "node %s is not connected", n.ID)
	}
	if spec.GetTrustedTier() && !c.passed.Load() {
		return status.Errorf(codes.FailedPrecondition, "node %s: its current connection has not passed an appraisal yet; retry in a few seconds", n.ID)
	}
	updates, stop := v.watchWorkload(n.ID, spec.GetId())
	defer stop()
	if err := v.sentWorkload(ctx, n.ID, spec.GetId()); err != nil {
		return err
	}
	if err := sendTo(ctx, n.ID, c, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_StartWorkload{
		StartWorkload: &apiv1.StartWorkload{Spec: spec},
	}}); err != nil {
		return err
	}
	archive := r.GetImageArchive()
	for off := 0; off < len(archive); off += ImageChunkSize {
		end := min(off+ImageChunkSize, len(archive))
		if err := sendTo(ctx, n.ID, c, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_ImageChunk{ImageChunk: &apiv1.ImageChunk{
			WorkloadId: spec.GetId(), Data: archive[off:end], Last: end == len(archive),
		}}}); err != nil {
			return err
		}
	}
	gone := c.gone
	for {
		select {
		case u := <-updates:
			if err := stream.Send(u); err != nil {
				return err
			}
			if e := u.GetEvent(); e != nil && terminal(e.GetState()) {
				return nil
			}
		case <-gone:
			return status.Errorf(codes.Unavailable, "node %s disconnected; the workload's fate is reported when it reconnects", n.ID)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// StopWorkload implements Admin: it asks the node to stop a workload and
// returns the workload's final event.
func (v *Verifier) StopWorkload(ctx context.Context, r *apiv1.StopWorkloadRequest) (*apiv1.WorkloadEvent, error) {
	if err := apiv1.ValidWorkloadID(r.GetWorkloadId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	updates, stop := v.watchWorkload(r.GetNodeId(), r.GetWorkloadId())
	defer stop()
	reason := r.GetReason()
	if reason == "" {
		reason = "stopped by the platform"
	}
	if err := v.send(ctx, r.GetNodeId(), &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_StopWorkload{
		StopWorkload: &apiv1.StopWorkload{Id: r.GetWorkloadId(), Reason: reason},
	}}); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case u := <-updates:
			if e := u.GetEvent(); e != nil && terminal(e.GetState()) {
				return e, nil
			}
		case <-t.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "node %s did not report workload %s stopped within a minute", r.GetNodeId(), r.GetWorkloadId())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// gpuReport keeps a node's latest GPU report and logs GPUs that turned
// unhealthy.
func (v *Verifier) gpuReport(node string, r *apiv1.GPUReport) {
	v.mu.Lock()
	prev := v.gpus[node]
	v.gpus[node] = r
	v.mu.Unlock()
	was := map[string]bool{}
	for _, g := range prev.GetGpus() {
		was[g.GetUuid()] = g.GetHealthy()
	}
	for _, g := range r.GetGpus() {
		if healthy, seen := was[g.GetUuid()]; !g.GetHealthy() && (!seen || healthy) {
			v.o.Logger.Warn("GPU unhealthy", "node", node, "gpu", g.GetIndex(), "uuid", g.GetUuid(), "problems", g.GetProblems())
		}
	}
	if r.GetError() != "" {
		v.o.Logger.Warn("node cannot read its GPUs", "node", node, "err", r.GetError())
	}
}

// GPUs returns a node's latest GPU report, or nil.
func (v *Verifier) GPUs(node string) *apiv1.GPUReport {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gpus[node]
}
