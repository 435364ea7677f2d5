// Package admin is the Admin gRPC service over the verifier's state: the
// operator's view of nodes (list, detail, watch), their decisions
// (accept firmware, revoke, install onto a disk) and workloads (run, stop). It is a thin
// adapter: node state belongs to package trust, streams and
// subscriptions to package hub.
package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/rollout"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// Server implements apiv1.AdminServer.
type Server struct {
	apiv1.UnimplementedAdminServer
	store    store.Store
	trust    *trust.Keeper
	hub      *hub.Hub
	updates  Updates
	rollouts *rollout.Runner
}

// New returns the Admin service.
func New(st store.Store, k *trust.Keeper, h *hub.Hub) *Server {
	return &Server{store: st, trust: k, hub: h}
}

func (s *Server) nodeProto(n *store.Node) *apiv1.Node {
	var reset uint32
	if n.LastClock != nil {
		reset = n.LastClock.ResetCount
	}
	return &apiv1.Node{
		NodeId: n.ID, State: n.State, Reason: n.Reason, TrustClass: trust.ClassProto(n.Class),
		EkFingerprint: n.EKFingerprint, TrustedUntilUnixMs: unixMS(n.TrustedUntil),
		EnrolledUnixMs: unixMS(n.Enrolled), LastVerdictUnixMs: unixMS(n.LastVerdict),
		Appraisals: n.Appraisals, Connected: s.hub.Connected(n.ID), ResetCount: reset,
	}
}

func grpcErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

// ListNodes implements Admin.
func (s *Server) ListNodes(ctx context.Context, _ *apiv1.ListNodesRequest) (*apiv1.ListNodesResponse, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := &apiv1.ListNodesResponse{}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, s.nodeProto(n))
	}
	return out, nil
}

// GetNode implements Admin.
func (s *Server) GetNode(ctx context.Context, r *apiv1.GetNodeRequest) (*apiv1.NodeDetail, error) {
	n, err := s.store.GetNode(ctx, r.GetNodeId())
	if err != nil {
		return nil, grpcErr(err)
	}
	limit := int(r.GetHistory())
	if limit <= 0 {
		limit = 20
	}
	h, err := s.store.History(ctx, n.ID, limit)
	if err != nil {
		return nil, err
	}
	out := &apiv1.NodeDetail{Node: s.nodeProto(n)}
	for _, vr := range h {
		out.History = append(out.History, &apiv1.VerdictRecord{
			UnixMs: vr.Time.UnixMilli(), State: vr.State, Reason: vr.Reason, Manifest: vr.Manifest,
			Workloads: vr.Workloads,
		})
	}
	out.Gpus = s.hub.GPUs(n.ID)
	out.Install = s.hub.LastInstall(n.ID)
	out.Update = s.hub.LastUpdate(n.ID)
	if out.Update == nil { // none since the verifier started: the stored one
		if b, err := s.store.LastUpdateEvent(ctx, n.ID); err == nil {
			e := &apiv1.UpdateEvent{}
			if proto.Unmarshal(b, e) == nil {
				out.Update = e
			}
		}
	}
	plan := s.hub.Plan(n.ID)
	out.AskPlan, out.AskPlanError, out.Hardware = plan.Plan, plan.Err, plan.Hardware
	ws, err := s.store.WorkloadEvents(ctx, n.ID, limit)
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
func (s *Server) Watch(_ *apiv1.WatchRequest, stream apiv1.Admin_WatchServer) error {
	ch, cancel := s.hub.Subscribe()
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

// AcceptFirmware implements Admin: the node's firmware PCRs are pinned
// anew at its next passing appraisal.
func (s *Server) AcceptFirmware(ctx context.Context, r *apiv1.NodeRequest) (*apiv1.Node, error) {
	n, err := s.trust.AcceptFirmware(ctx, r.GetNodeId())
	if err != nil {
		return nil, grpcErr(err)
	}
	return s.nodeProto(n), nil
}

// Revoke implements Admin: the node is untrusted whatever it proves.
func (s *Server) Revoke(ctx context.Context, r *apiv1.RevokeRequest) (*apiv1.Node, error) {
	n, err := s.trust.Revoke(ctx, r.GetNodeId(), r.GetReason())
	if err != nil {
		return nil, grpcErr(err)
	}
	return s.nodeProto(n), nil
}

// ImageChunkSize is the size of the ImageChunk messages an archive is
// cut into on the node's stream.
const ImageChunkSize = 1 << 20

// RunWorkload implements Admin: it checks the request, sends the
// workload (and its image archive) down the node's stream and relays
// the node's events and output until the workload ends.
func (s *Server) RunWorkload(r *apiv1.RunWorkloadRequest, stream apiv1.Admin_RunWorkloadServer) error {
	ctx := stream.Context()
	spec := r.GetSpec()
	if err := r.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	n, err := s.store.GetNode(ctx, r.GetNodeId())
	if err != nil {
		return grpcErr(err)
	}
	if spec.GetTrustedTier() && !s.trust.Trusted(n) {
		return status.Errorf(codes.FailedPrecondition, "node %s is not trusted (%s: %s)", n.ID, store.StateText(n.State), n.Reason)
	}
	c := s.hub.Conn(n.ID)
	if c == nil {
		return status.Errorf(codes.Unavailable, "node %s is not connected", n.ID)
	}
	if spec.GetTrustedTier() && !c.Passed() {
		return status.Errorf(codes.FailedPrecondition, "node %s: its current connection has not passed an appraisal yet; retry in a few seconds", n.ID)
	}
	updates, stop := s.hub.WatchWorkload(n.ID, spec.GetId())
	defer stop()
	if err := s.hub.SentWorkload(ctx, n.ID, spec.GetId(), store.WorkloadEvent{Time: s.trust.Now(), Reason: "sent to the node"}); err != nil {
		return err
	}
	if err := c.Send(ctx, n.ID, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_StartWorkload{
		StartWorkload: &apiv1.StartWorkload{Spec: spec},
	}}); err != nil {
		return err
	}
	archive := r.GetImageArchive()
	for off := 0; off < len(archive); off += ImageChunkSize {
		end := min(off+ImageChunkSize, len(archive))
		if err := c.Send(ctx, n.ID, &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_ImageChunk{ImageChunk: &apiv1.ImageChunk{
			WorkloadId: spec.GetId(), Data: archive[off:end], Last: end == len(archive),
		}}}); err != nil {
			return err
		}
	}
	gone := c.Gone()
	for {
		select {
		case u := <-updates:
			if err := stream.Send(u); err != nil {
				return err
			}
			if e := u.GetEvent(); e != nil && Terminal(e.GetState()) {
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
func (s *Server) StopWorkload(ctx context.Context, r *apiv1.StopWorkloadRequest) (*apiv1.WorkloadEvent, error) {
	if err := apiv1.ValidWorkloadID(r.GetWorkloadId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	updates, stop := s.hub.WatchWorkload(r.GetNodeId(), r.GetWorkloadId())
	defer stop()
	reason := r.GetReason()
	if reason == "" {
		reason = "stopped by the platform"
	}
	if err := s.hub.Send(ctx, r.GetNodeId(), &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_StopWorkload{
		StopWorkload: &apiv1.StopWorkload{Id: r.GetWorkloadId(), Reason: reason},
	}}); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case u := <-updates:
			if e := u.GetEvent(); e != nil && Terminal(e.GetState()) {
				return e, nil
			}
		case <-t.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "node %s did not report workload %s stopped within a minute", r.GetNodeId(), r.GetWorkloadId())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// InstallTimeout bounds how long Install waits for the node to finish
// writing and reading back its disk.
const InstallTimeout = 30 * time.Minute

// Install implements Admin: it asks the node to install itself onto a
// disk and waits for its answer, REBOOTING or FAILED. The node must be
// connected; its trust state does not matter (a node on a supplier's
// bench installs before it is ever trusted).
func (s *Server) Install(ctx context.Context, r *apiv1.InstallRequest) (*apiv1.InstallEvent, error) {
	if _, err := apiv1.CheckInstall(r.GetDisk(), r.GetWipe()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := s.store.GetNode(ctx, r.GetNodeId()); err != nil {
		return nil, grpcErr(err)
	}
	events, stop := s.hub.WatchInstall(r.GetNodeId())
	defer stop()
	id := rand.Text() // this call's answers, not another caller's
	if err := s.hub.Send(ctx, r.GetNodeId(), &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Install{
		Install: &apiv1.Install{Disk: r.GetDisk(), Wipe: r.GetWipe(), RequestId: id},
	}}); err != nil {
		return nil, err
	}
	t := time.NewTimer(InstallTimeout)
	defer t.Stop()
	for {
		select {
		case e := <-events:
			if e.GetRequestId() != id {
				continue
			}
			if st := e.GetState(); st == apiv1.InstallState_INSTALL_STATE_REBOOTING || st == apiv1.InstallState_INSTALL_STATE_FAILED {
				return e, nil
			}
		case <-t.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "node %s did not finish installing within %s; attest node %s shows its last install event",
				r.GetNodeId(), InstallTimeout, r.GetNodeId())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Terminal reports whether a workload in state s has ended.
func Terminal(s apiv1.WorkloadState) bool {
	return s == apiv1.WorkloadState_WORKLOAD_STATE_EXITED || s == apiv1.WorkloadState_WORKLOAD_STATE_KILLED ||
		s == apiv1.WorkloadState_WORKLOAD_STATE_FAILED
}

// unixMS is t in Unix milliseconds, 0 for the zero time.
func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
