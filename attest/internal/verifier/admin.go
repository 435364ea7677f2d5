package verifier

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

func (v *Verifier) nodeProto(n *store.Node) *apiv1.Node {
	var reset uint32
	if n.LastClock != nil {
		reset = n.LastClock.ResetCount
	}
	return &apiv1.Node{
		NodeId: n.ID, State: stateProto(n.State), Reason: n.Reason, TrustClass: classProto(n.Class),
		EkFingerprint: n.EKFingerprint, TrustedUntilUnixMs: unixMS(n.TrustedUntil),
		EnrolledUnixMs: unixMS(n.Enrolled), LastVerdictUnixMs: unixMS(n.LastVerdict),
		Appraisals: n.Appraisals, Connected: v.connected(n.ID), ResetCount: reset,
	}
}

func grpcErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

// ListNodes implements Admin.
func (v *Verifier) ListNodes(ctx context.Context, _ *apiv1.ListNodesRequest) (*apiv1.ListNodesResponse, error) {
	nodes, err := v.o.Store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := &apiv1.ListNodesResponse{}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, v.nodeProto(n))
	}
	return out, nil
}

// GetNode implements Admin.
func (v *Verifier) GetNode(ctx context.Context, r *apiv1.GetNodeRequest) (*apiv1.NodeDetail, error) {
	n, err := v.o.Store.GetNode(ctx, r.GetNodeId())
	if err != nil {
		return nil, grpcErr(err)
	}
	limit := int(r.GetHistory())
	if limit <= 0 {
		limit = 20
	}
	h, err := v.o.Store.History(ctx, n.ID, limit)
	if err != nil {
		return nil, err
	}
	out := &apiv1.NodeDetail{Node: v.nodeProto(n)}
	for _, vr := range h {
		out.History = append(out.History, &apiv1.VerdictRecord{
			UnixMs: vr.Time.UnixMilli(), State: stateProto(vr.State), Reason: vr.Reason, Manifest: vr.Manifest,
			Workloads: vr.Workloads,
		})
	}
	out.Gpus = v.GPUs(n.ID)
	v.mu.Lock()
	out.AskPlan, out.AskPlanError = v.plans[n.ID].plan, v.plans[n.ID].err
	v.mu.Unlock()
	ws, err := v.o.Store.WorkloadEvents(ctx, n.ID, limit)
	if err != nil {
		return nil, err
	}
	for _, e := range ws {
		out.Workloads = append(out.Workloads, &apiv1.WorkloadEvent{
			Id: e.Workload, State: apiv1.WorkloadStateByName(e.State), Reason: e.Reason, ExitCode: int32(e.ExitCode),
			OomKilled: e.OOMKilled, ImageDigest: e.ImageDigest, UnixMs: e.Time.UnixMilli(),
		})
	}
	return out, nil
}

// Watch implements Admin: it streams every verdict and state change.
func (v *Verifier) Watch(_ *apiv1.WatchRequest, stream apiv1.Admin_WatchServer) error {
	ch, cancel := v.Subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case c := <-ch:
			if err := stream.Send(c); err != nil {
				return err
			}
		}
	}
}

// Subscribe registers for every verdict and state change. Slow
// subscribers miss changes rather than stall verdicts. Call cancel when
// done.
func (v *Verifier) Subscribe() (<-chan *apiv1.StateChange, func()) {
	ch := make(chan *apiv1.StateChange, 1024)
	v.mu.Lock()
	v.watchers[ch] = struct{}{}
	v.mu.Unlock()
	return ch, func() {
		v.mu.Lock()
		delete(v.watchers, ch)
		v.mu.Unlock()
	}
}

// AcceptFirmware implements Admin: the node's firmware PCRs are pinned
// anew at its next passing appraisal.
func (v *Verifier) AcceptFirmware(ctx context.Context, r *apiv1.NodeRequest) (*apiv1.Node, error) {
	n, _, err := v.update(ctx, r.GetNodeId(), func(n *store.Node) (string, error) {
		n.RepinFirmware = true
		if n.State == StateTrusted {
			return "", nil
		}
		n.State, n.Reason = StateSuspect, "operator accepted new firmware; awaiting re-check"
		return "", nil
	})
	if err != nil {
		return nil, grpcErr(err)
	}
	return v.nodeProto(n), nil
}

// Revoke implements Admin: the node is untrusted whatever it proves.
func (v *Verifier) Revoke(ctx context.Context, r *apiv1.RevokeRequest) (*apiv1.Node, error) {
	n, _, err := v.update(ctx, r.GetNodeId(), func(n *store.Node) (string, error) {
		n.Revoked, n.State, n.Reason = true, StateUntrusted, "revoked by operator: "+r.GetReason()
		return "", nil
	})
	if err != nil {
		return nil, grpcErr(err)
	}
	return v.nodeProto(n), nil
}
