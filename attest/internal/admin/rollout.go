package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/rollout"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// SetRollouts enables the rollout calls.
func (s *Server) SetRollouts(r *rollout.Runner) { s.rollouts = r }

func (s *Server) runner() (*rollout.Runner, error) {
	if s.rollouts == nil {
		return nil, status.Error(codes.FailedPrecondition, "this verifier runs no rollouts")
	}
	return s.rollouts, nil
}

func rolloutErr(err error) error {
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, rollout.ErrState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, rollout.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

// StartRollout implements Admin. The build is checked as Update checks
// it before any node is picked.
func (s *Server) StartRollout(ctx context.Context, r *apiv1.StartRolloutRequest) (*apiv1.Rollout, error) {
	run, err := s.runner()
	if err != nil {
		return nil, err
	}
	b, err := s.updates.openBundle(r.GetBuild())
	if err != nil {
		return nil, err
	}
	b.system.Close()
	maxFailed := -1
	if r.MaxFailedPercent != nil {
		maxFailed = int(min(r.GetMaxFailedPercent(), 101))
	}
	if len(r.GetNodeIds()) > rollout.MaxNodes {
		return nil, status.Errorf(codes.InvalidArgument, "%d nodes listed, at most %d", len(r.GetNodeIds()), rollout.MaxNodes)
	}
	ro, err := run.Start(ctx, rollout.Plan{Build: r.GetBuild(), Nodes: r.GetNodeIds(), Percent: int(min(r.GetPercent(), 101)),
		Parallel: int(min(r.GetParallel(), 1<<16)), MaxFailedPercent: maxFailed, Force: r.Force, Fetch: r.Fetch})
	if err != nil {
		return nil, rolloutErr(err)
	}
	return rolloutProto(ro), nil
}

// SetRollout implements Admin.
func (s *Server) SetRollout(ctx context.Context, r *apiv1.SetRolloutRequest) (*apiv1.Rollout, error) {
	run, err := s.runner()
	if err != nil {
		return nil, err
	}
	c := rollout.Change{Pause: r.GetPause(), Resume: r.GetResume(), Cancel: r.GetCancel(), RetryFailed: r.GetRetryFailed(), MaxFailedPercent: -1}
	if r.MaxFailedPercent != nil {
		c.MaxFailedPercent = int(min(r.GetMaxFailedPercent(), 101))
	}
	ro, err := run.Set(ctx, r.GetBuild(), c)
	if err != nil {
		return nil, rolloutErr(err)
	}
	return rolloutProto(ro), nil
}

// GetRollout implements Admin.
func (s *Server) GetRollout(_ context.Context, r *apiv1.GetRolloutRequest) (*apiv1.Rollout, error) {
	run, err := s.runner()
	if err != nil {
		return nil, err
	}
	ro, err := run.Get(r.GetBuild())
	if err != nil {
		return nil, rolloutErr(err)
	}
	return rolloutProto(ro), nil
}

// ListRollouts implements Admin.
func (s *Server) ListRollouts(context.Context, *apiv1.ListRolloutsRequest) (*apiv1.ListRolloutsResponse, error) {
	run, err := s.runner()
	if err != nil {
		return nil, err
	}
	out := &apiv1.ListRolloutsResponse{}
	for _, ro := range run.List() {
		out.Rollouts = append(out.Rollouts, rolloutProto(ro))
	}
	return out, nil
}

func rolloutProto(ro *store.Rollout) *apiv1.Rollout {
	p := &apiv1.Rollout{Build: ro.Build, State: ro.State, Reason: ro.Reason, Parallel: uint32(ro.Parallel),
		MaxFailedPercent: uint32(ro.MaxFailedPercent), Force: ro.Force, Fetch: ro.Fetch, CreatedUnixMs: unixMS(ro.Created), UpdatedUnixMs: unixMS(ro.Updated)}
	for _, n := range ro.Nodes {
		p.Nodes = append(p.Nodes, &apiv1.RolloutNode{NodeId: n.Node, State: n.State, Reason: n.Reason, UpdatedUnixMs: unixMS(n.Updated)})
	}
	return p
}
