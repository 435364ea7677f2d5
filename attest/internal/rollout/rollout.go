// Package rollout installs a build on a fleet a few nodes at a time: a
// list of nodes or a share of the fleet, halting once more of them fail
// than the rollout allows. Each node's update is admin Update (stream,
// write, reboot once); a node counts as done only once the verifier
// found it trusted on the new build (BOOTED) and the node made the new
// slot its default (COMMITTED). Rollouts and each node's progress are
// kept in the store, so a restarted verifier goes on where it stopped.
package rollout

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// States of a rollout.
const (
	Running = "running"
	Paused  = "paused"
	Halted  = "halted"
	Done    = "done"
)

// States of a node in a rollout. Updating, Waiting, Rebooting and
// Booted are in flight.
const (
	Pending   = "pending"
	Updating  = "updating"
	Waiting   = "waiting"
	Rebooting = "rebooting"
	Booted    = "booted"
	Succeeded = "done"
	Failed    = "failed"
	// Skipped nodes were pending when the rollout was cancelled.
	Skipped = "skipped"
)

// Errors callers branch on.
var (
	// ErrInvalid is a plan or change that cannot be carried out as asked.
	ErrInvalid = errors.New("invalid rollout")
	// ErrState is a change the rollout's state does not allow.
	ErrState = errors.New("rollout state")
	// ErrNotFound is a build without a rollout.
	ErrNotFound = errors.New("no rollout")
)

// Defaults.
const (
	DefaultBootTimeout = 30 * time.Minute
	DefaultWaitTimeout = 24 * time.Hour
	DefaultTick        = 10 * time.Second
	// MaxNodes bounds a rollout's list of nodes.
	MaxNodes = 100000
)

// Options are a Runner's parts.
type Options struct {
	Store store.Store
	// Update is admin Update: it streams the build to a connected node
	// and returns its event WAITING, REBOOTING or FAILED.
	Update func(ctx context.Context, r *apiv1.UpdateRequest) (*apiv1.UpdateEvent, error)
	// Watch subscribes to a node's update events; Last returns its
	// latest one (or nil).
	Watch func(node string) (<-chan *apiv1.UpdateEvent, func())
	Last  func(node string) *apiv1.UpdateEvent
	// Booted returns the request ID of the node's latest update the
	// verifier itself found trusted on its build (BOOTED), or "".
	Booted func(node string) string
	// Connected reports whether a node has a stream now.
	Connected func(node string) bool
	// OnBuild returns the build a node runs, trusted ("" if it is not
	// trusted now).
	OnBuild func(ctx context.Context, node string) (string, error)
	// BootTimeout bounds the time from a node's reboot into the build to
	// its commit (DefaultBootTimeout if 0). It must exceed the nodes'
	// trial timeout, after which they fall back by themselves.
	BootTimeout time.Duration
	// WaitTimeout bounds how long a node may wait for its workloads to
	// end before it reboots (DefaultWaitTimeout if 0).
	WaitTimeout time.Duration
	// Tick is how often pending nodes are looked at again when nothing
	// else happens (DefaultTick if 0).
	Tick   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Runner runs the rollouts. Its methods are safe for concurrent use.
type Runner struct {
	o    Options
	kick chan struct{}

	mu       sync.Mutex
	rollouts map[string]*store.Rollout
	// recheck are the nodes New found with their update and no one
	// following it, by build and node.
	recheck map[[2]string]bool
	wg      sync.WaitGroup
}

// New loads the rollouts from the store. A node that was being sent its
// update when the verifier stopped is pending again: its update is tried
// anew (a node that meanwhile runs the build trusted counts as done). A
// node that had its update (waiting for workloads, rebooting, booted) is
// followed (recheck).
func New(ctx context.Context, o Options) (*Runner, error) {
	if o.Store == nil || o.Update == nil || o.Watch == nil || o.Last == nil || o.Booted == nil || o.Connected == nil || o.OnBuild == nil {
		return nil, errors.New("rollout: Options needs Store, Update, Watch, Last, Booted, Connected and OnBuild")
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = DefaultBootTimeout
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	all, err := o.Store.Rollouts(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading rollouts: %w", err)
	}
	r := &Runner{o: o, kick: make(chan struct{}, 1), rollouts: map[string]*store.Rollout{}, recheck: map[[2]string]bool{}}
	for _, ro := range all {
		r.rollouts[ro.Build] = ro
		var reset []store.RolloutNode
		for i := range ro.Nodes {
			n := &ro.Nodes[i]
			switch n.State {
			case Updating:
				n.State, n.Reason = Pending, "the verifier restarted while sending it the build; it is tried again"
			case Waiting, Rebooting, Booted:
				n.State, n.Reason = Rebooting, "the verifier restarted; waiting for the node to be trusted on the build and commit"
				r.recheck[[2]string{ro.Build, n.Node}] = true
			default:
				continue
			}
			n.Updated = o.Now()
			reset = append(reset, *n)
		}
		if len(reset) > 0 {
			if err := o.Store.SaveRollout(ctx, &store.Rollout{Build: ro.Build, Created: ro.Created, Updated: ro.Updated, State: ro.State,
				Reason: ro.Reason, Parallel: ro.Parallel, MaxFailedPercent: ro.MaxFailedPercent, Force: ro.Force, Nodes: reset}); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func inFlight(state string) bool {
	switch state {
	case Updating, Waiting, Rebooting, Booted:
		return true
	}
	return false
}

// Plan is what Start is asked to do.
type Plan struct {
	Build string
	// Nodes lists the nodes to update; Percent instead picks that share
	// of the fleet's nodes (rounded up), the same ones every time for a
	// build, so raising it only adds nodes.
	Nodes   []string
	Percent int
	// Parallel is how many nodes update at once (1 if 0; kept as it was
	// for a rollout that exists).
	Parallel int
	// MaxFailedPercent is the share of the rollout's nodes that may fail
	// before it halts (-1: 0 for a new rollout, kept for one that exists).
	MaxFailedPercent int
	// Force reboots nodes while workloads run, Fetch has them fetch the
	// build over HTTPS (nil: false for a new rollout, kept for one that
	// exists).
	Force, Fetch *bool
}

// Start begins the build's rollout, or adds nodes to it (a paused one
// stays paused; a halted one must be resumed first). A node pending or
// updating in another build's rollout is refused.
func (r *Runner) Start(ctx context.Context, p Plan) (*store.Rollout, error) {
	if p.Build == "" {
		return nil, fmt.Errorf("%w: no build", ErrInvalid)
	}
	if (len(p.Nodes) == 0) == (p.Percent == 0) {
		return nil, fmt.Errorf("%w: give either a list of nodes or a percentage of the fleet", ErrInvalid)
	}
	if p.Percent < 0 || p.Percent > 100 {
		return nil, fmt.Errorf("%w: percentage %d: want 1 to 100", ErrInvalid, p.Percent)
	}
	if len(p.Nodes) > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes listed, at most %d", ErrInvalid, len(p.Nodes), MaxNodes)
	}
	if p.Parallel < 0 || p.MaxFailedPercent < -1 || p.MaxFailedPercent > 100 {
		return nil, fmt.Errorf("%w: parallel %d, max failed %d%%: want parallel ≥ 1 and max failed 0 to 100", ErrInvalid, p.Parallel, p.MaxFailedPercent)
	}
	targets := p.Nodes
	if p.Percent > 0 {
		var err error
		if targets, err = r.share(ctx, p.Build, p.Percent); err != nil {
			return nil, err
		}
	} else {
		seen := map[string]bool{}
		for _, n := range p.Nodes {
			if seen[n] {
				return nil, fmt.Errorf("%w: node %q is listed twice", ErrInvalid, n)
			}
			seen[n] = true
			if _, err := r.o.Store.GetNode(ctx, n); errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("%w: node %q is not enrolled (attest nodes lists the nodes)", ErrInvalid, n)
			} else if err != nil {
				return nil, err
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	ro := r.rollouts[p.Build]
	if ro == nil {
		ro = &store.Rollout{Build: p.Build, Created: now, Parallel: 1}
	} else if ro.State == Halted {
		return nil, fmt.Errorf("%w: the rollout of %s is halted (%s): see attest rollout -build %s, then resume it", ErrState, p.Build, ro.Reason, p.Build)
	}
	// A node is in one unfinished rollout at a time: two updates to it
	// at once would undo each other.
	wanted := make(map[string]bool, len(targets))
	for _, n := range targets {
		wanted[n] = true
	}
	for _, other := range r.rollouts {
		if other.Build == p.Build || other.State == Done {
			continue
		}
		for _, n := range other.Nodes {
			if (n.State == Pending || inFlight(n.State)) && wanted[n.Node] {
				return nil, fmt.Errorf("%w: node %s is %s in the rollout of %s: wait for that rollout, cancel it (attest rollout -build %s -cancel), or leave the node out", ErrState, n.Node, n.State, other.Build, other.Build)
			}
		}
	}
	next := *ro
	next.Nodes = nil
	next.Updated = now
	if ro.State != Paused {
		next.State, next.Reason = Running, ""
	}
	if p.Force != nil {
		next.Force = *p.Force
	}
	if p.Fetch != nil {
		next.Fetch = *p.Fetch
	}
	if p.Parallel > 0 {
		next.Parallel = p.Parallel
	}
	if p.MaxFailedPercent >= 0 {
		next.MaxFailedPercent = p.MaxFailedPercent
	}
	// New targets join at the end; ones a cancel skipped are taken up
	// again.
	all := slices.Clone(ro.Nodes)
	at := make(map[string]int, len(all))
	for i, n := range all {
		at[n.Node] = i
	}
	var changed []store.RolloutNode
	for _, n := range targets {
		if i, ok := at[n]; ok {
			if all[i].State == Skipped {
				all[i].State, all[i].Reason, all[i].Updated = Pending, "taken up again", now
				changed = append(changed, all[i])
			}
			continue
		}
		rn := store.RolloutNode{Node: n, Position: len(all), State: Pending, Updated: now}
		all = append(all, rn)
		changed = append(changed, rn)
	}
	next.Nodes = changed
	if err := r.o.Store.SaveRollout(ctx, &next); err != nil {
		return nil, err
	}
	next.Nodes = all
	r.rollouts[p.Build] = &next
	r.o.Logger.Info("rollout started", "build", p.Build, "nodes", len(next.Nodes), "parallel", next.Parallel, "max_failed_percent", next.MaxFailedPercent)
	r.wake()
	return clone(&next), nil
}

// share returns percent of the fleet's nodes (revoked ones left out), in
// an order fixed by the build: sorted by SHA-256 of build and node ID.
func (r *Runner) share(ctx context.Context, build string, percent int) ([]string, error) {
	nodes, err := r.o.Store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	type ranked struct {
		id   string
		rank [32]byte
	}
	var fleet []ranked
	for _, n := range nodes {
		if !n.Revoked {
			fleet = append(fleet, ranked{n.ID, sha256.Sum256([]byte(build + "\x00" + n.ID))})
		}
	}
	if len(fleet) == 0 {
		return nil, fmt.Errorf("%w: the fleet has no nodes", ErrInvalid)
	}
	slices.SortFunc(fleet, func(a, b ranked) int { return slices.Compare(a.rank[:], b.rank[:]) })
	k := (len(fleet)*percent + 99) / 100
	out := make([]string, k)
	for i := range out {
		out[i] = fleet[i].id
	}
	return out, nil
}

// Change is what Set is asked to do.
type Change struct {
	// Pause stops starting nodes (the ones in flight finish); Resume
	// starts again, a halted rollout too; Cancel ends the rollout: the
	// nodes not started are skipped (and free for another build's
	// rollout; Start takes them up again), the ones in flight finish.
	Pause, Resume, Cancel bool
	// RetryFailed, with Resume, makes the failed nodes pending again.
	RetryFailed bool
	// MaxFailedPercent, if ≥ 0, replaces the rollout's.
	MaxFailedPercent int
}

// Set pauses or resumes the build's rollout. Resuming a rollout with
// more failures than it allows is refused: retry the failed nodes or
// allow more.
func (r *Runner) Set(ctx context.Context, build string, c Change) (*store.Rollout, error) {
	if n := btoi(c.Pause) + btoi(c.Resume) + btoi(c.Cancel); n != 1 || (c.RetryFailed && !c.Resume) || c.MaxFailedPercent > 100 {
		return nil, fmt.Errorf("%w: pause, resume or cancel (resume may retry the failed nodes and set max failed 0 to 100)", ErrInvalid)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ro := r.rollouts[build]
	if ro == nil {
		return nil, fmt.Errorf("%w of %s (attest rollouts lists them)", ErrNotFound, build)
	}
	next := *ro
	next.Nodes = slices.Clone(ro.Nodes)
	now := r.o.Now()
	next.Updated = now
	var changed []store.RolloutNode
	switch {
	case c.Pause:
		if ro.State != Running {
			return nil, fmt.Errorf("%w: the rollout of %s is %s, not running", ErrState, build, ro.State)
		}
		next.State, next.Reason = Paused, "paused by the operator; nodes in flight finish"
	case c.Cancel:
		if ro.State == Done {
			return nil, fmt.Errorf("%w: the rollout of %s is done already", ErrState, build)
		}
		n := 0
		for i := range next.Nodes {
			if next.Nodes[i].State == Pending {
				next.Nodes[i].State, next.Nodes[i].Reason, next.Nodes[i].Updated = Skipped, "the rollout was cancelled before this node started", now
				changed = append(changed, next.Nodes[i])
				n++
			}
		}
		next.State, next.Reason = Done, fmt.Sprintf("cancelled by the operator: %d nodes skipped; nodes in flight finish", n)
	case c.Resume:
		if ro.State != Paused && ro.State != Halted && (ro.State != Done || !c.RetryFailed) {
			return nil, fmt.Errorf("%w: the rollout of %s is %s: only a paused or halted rollout resumes (a done one with -retry-failed)", ErrState, build, ro.State)
		}
		if c.MaxFailedPercent >= 0 {
			next.MaxFailedPercent = c.MaxFailedPercent
		}
		if c.RetryFailed {
			for i := range next.Nodes {
				if next.Nodes[i].State == Failed {
					next.Nodes[i].State, next.Nodes[i].Reason, next.Nodes[i].Updated = Pending, "retried after: "+next.Nodes[i].Reason, now
					changed = append(changed, next.Nodes[i])
				}
			}
		}
		if f, allowed := failures(&next); f > allowed {
			return nil, fmt.Errorf("%w: %d of the rollout's %d nodes failed and it allows %d (%d%%): resume with -retry-failed, or allow more with -max-failed",
				ErrState, f, len(next.Nodes), allowed, next.MaxFailedPercent)
		}
		next.State, next.Reason = Running, ""
	}
	save := next
	save.Nodes = changed
	if err := r.o.Store.SaveRollout(ctx, &save); err != nil {
		return nil, err
	}
	r.rollouts[build] = &next
	r.wake()
	return clone(&next), nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// failures returns how many of a rollout's nodes failed and how many may.
func failures(ro *store.Rollout) (failed, allowed int) {
	for _, n := range ro.Nodes {
		if n.State == Failed {
			failed++
		}
	}
	return failed, len(ro.Nodes) * ro.MaxFailedPercent / 100
}

// Get returns the build's rollout.
func (r *Runner) Get(build string) (*store.Rollout, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ro := r.rollouts[build]
	if ro == nil {
		return nil, fmt.Errorf("%w of %s (attest rollouts lists them)", ErrNotFound, build)
	}
	return clone(ro), nil
}

// List returns every rollout, newest first.
func (r *Runner) List() []*store.Rollout {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*store.Rollout
	for _, ro := range r.rollouts {
		out = append(out, clone(ro))
	}
	slices.SortFunc(out, func(a, b *store.Rollout) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Build, b.Build)
	})
	return out
}

func clone(ro *store.Rollout) *store.Rollout {
	c := *ro
	c.Nodes = slices.Clone(ro.Nodes)
	return &c
}

func (r *Runner) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run drives the running rollouts until ctx ends, then waits for the
// node updates it started to return.
func (r *Runner) Run(ctx context.Context) {
	defer r.wg.Wait()
	for {
		r.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-time.After(r.o.Tick):
		}
	}
}

// step halts or finishes the running rollouts that call for it and
// starts pending nodes up to each one's Parallel.
func (r *Runner) step(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	for k := range r.recheck {
		delete(r.recheck, k)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.followRestarted(ctx, k[0], k[1])
		}()
	}
	for _, ro := range r.rollouts {
		if ro.State != Running {
			continue
		}
		flying, pending := 0, 0
		for _, n := range ro.Nodes {
			switch {
			case inFlight(n.State):
				flying++
			case n.State == Pending:
				pending++
			}
		}
		if f, allowed := failures(ro); f > allowed {
			r.setState(ctx, ro, Halted, fmt.Sprintf("%d of %d nodes failed, more than the %d (%d%%) it allows; nodes in flight finish", f, len(ro.Nodes), allowed, ro.MaxFailedPercent))
			continue
		}
		if flying == 0 && pending == 0 {
			r.setState(ctx, ro, Done, "every node is done or failed")
			continue
		}
		// The nodes this pass changes are stored in one transaction, before
		// any update started here can report (it needs r.mu).
		var changed []store.RolloutNode
		mark := func(n *store.RolloutNode, state, reason string) {
			if n.State != state || n.Reason != reason {
				n.State, n.Reason, n.Updated = state, reason, r.o.Now()
				changed = append(changed, *n)
			}
		}
		var start []*apiv1.UpdateRequest
		for i := range ro.Nodes {
			if flying >= ro.Parallel {
				break
			}
			n := &ro.Nodes[i]
			if n.State != Pending {
				continue
			}
			if !r.o.Connected(n.Node) {
				mark(n, Pending, "waiting for the node to connect")
				continue
			}
			mark(n, Updating, "streaming the build")
			flying++
			start = append(start, &apiv1.UpdateRequest{NodeId: n.Node, Build: ro.Build, Force: ro.Force, Fetch: ro.Fetch})
		}
		if len(changed) > 0 {
			save := *ro
			save.Nodes = changed
			if err := r.o.Store.SaveRollout(ctx, &save); err != nil {
				r.o.Logger.Error("saving rollout", "build", ro.Build, "err", err)
			}
		}
		for _, req := range start {
			r.o.Logger.Info("rollout node", "build", ro.Build, "node", req.GetNodeId(), "state", Updating)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.updateNode(ctx, req)
			}()
		}
	}
}

// setState changes a rollout's state; r.mu is held.
func (r *Runner) setState(ctx context.Context, ro *store.Rollout, state, reason string) {
	ro.State, ro.Reason, ro.Updated = state, reason, r.o.Now()
	save := *ro
	save.Nodes = nil
	if err := r.o.Store.SaveRollout(ctx, &save); err != nil {
		r.o.Logger.Error("saving rollout", "build", ro.Build, "err", err)
	}
	r.o.Logger.Info("rollout", "build", ro.Build, "state", state, "reason", reason)
}

// setNode changes a node's state in a rollout (if it changed); r.mu is
// held.
func (r *Runner) setNode(ctx context.Context, build string, n *store.RolloutNode, state, reason string) {
	if n.State == state && n.Reason == reason {
		return
	}
	n.State, n.Reason, n.Updated = state, reason, r.o.Now()
	if err := r.o.Store.SaveRolloutNode(ctx, build, *n); err != nil {
		r.o.Logger.Error("saving rollout node", "build", build, "node", n.Node, "err", err)
	}
	r.o.Logger.Info("rollout node", "build", build, "node", n.Node, "state", state, "reason", reason)
}

// report records a node's progress in the build's rollout; a final
// state frees its place for the next node.
func (r *Runner) report(ctx context.Context, build, node, state, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ro := r.rollouts[build]
	if ro == nil {
		return
	}
	i := slices.IndexFunc(ro.Nodes, func(n store.RolloutNode) bool { return n.Node == node })
	if i < 0 {
		return
	}
	r.setNode(context.WithoutCancel(ctx), build, &ro.Nodes[i], state, reason)
	if !inFlight(state) {
		r.wake()
	}
}

// updateNode updates one node and follows it until it commits the build,
// fails, or misses a deadline. If ctx ends first (the verifier stops),
// the node stays in flight in the store, and New picks it up.
func (r *Runner) updateNode(ctx context.Context, req *apiv1.UpdateRequest) {
	build, node := req.GetBuild(), req.GetNodeId()
	if on, err := r.o.OnBuild(ctx, node); err == nil && on == build {
		r.report(ctx, build, node, Succeeded, "it already runs build "+build+", trusted")
		return
	}
	// Events only wake the loop below; what it decides it reads from the
	// verifier's records, so an event dropped from a full channel loses
	// nothing.
	events, stop := r.o.Watch(node)
	defer stop()
	e, err := r.o.Update(ctx, req)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		r.report(ctx, build, node, Failed, err.Error())
		return
	}
	switch e.GetState() {
	case apiv1.UpdateState_UPDATE_STATE_FAILED:
		r.report(ctx, build, node, Failed, e.GetReason())
		return
	case apiv1.UpdateState_UPDATE_STATE_WAITING, apiv1.UpdateState_UPDATE_STATE_REBOOTING:
	default:
		r.report(ctx, build, node, Failed, "the node answered the update with "+e.GetState().String())
		return
	}
	id := e.GetRequestId()
	tick := time.NewTicker(r.o.Tick)
	defer tick.Stop()
	waitUntil := time.After(r.o.WaitTimeout)
	var bootUntil <-chan time.Time
	for {
		// Booted before Last: the verifier marks BOOTED after publishing
		// it, so a COMMITTED read now came after this update's BOOTED.
		booted := r.o.Booted(node) == id
		l := r.o.Last(node)
		mine := l.GetRequestId() == id
		switch {
		case booted && l.GetState() == apiv1.UpdateState_UPDATE_STATE_COMMITTED:
			if on, err := r.o.OnBuild(ctx, node); err == nil && on == build {
				r.report(ctx, build, node, Succeeded, "trusted on build "+build+" and committed")
				return
			}
		case mine && l.GetState() == apiv1.UpdateState_UPDATE_STATE_FAILED:
			r.report(ctx, build, node, Failed, l.GetReason())
			return
		case booted:
			r.report(ctx, build, node, Booted, "trusted on build "+build+"; waiting for the node to commit")
		case mine && l.GetState() == apiv1.UpdateState_UPDATE_STATE_REBOOTING:
			r.report(ctx, build, node, Rebooting, "rebooting into it once")
		case mine && l.GetState() == apiv1.UpdateState_UPDATE_STATE_WAITING:
			r.report(ctx, build, node, Waiting, "written; it reboots once no workload runs (a rollout with -force reboots at once)")
		}
		if bootUntil == nil && (booted || (mine && l.GetState() == apiv1.UpdateState_UPDATE_STATE_REBOOTING)) {
			bootUntil, waitUntil = time.After(r.o.BootTimeout), nil
		}
		select {
		case <-ctx.Done():
			return
		case <-waitUntil:
			r.report(ctx, build, node, Failed, fmt.Sprintf("still waiting for its workloads to end after %s (a rollout with -force reboots at once)", r.o.WaitTimeout))
			return
		case <-bootUntil:
			r.report(ctx, build, node, Failed, fmt.Sprintf("not trusted on build %s and committed within %s of its reboot", build, r.o.BootTimeout))
			return
		case <-events:
		case <-tick.C:
		}
	}
}

// followRestarted follows a node that was waiting for its workloads,
// rebooting or booted when the verifier stopped: this verifier did not
// send the update, so the update's own events decide nothing. The node
// is done once it is trusted on the build and commits, or is still
// trusted on it when a trial would have ended; failed otherwise.
func (r *Runner) followRestarted(ctx context.Context, build, node string) {
	events, stop := r.o.Watch(node)
	defer stop()
	tick := time.NewTicker(r.o.Tick)
	defer tick.Stop()
	until := time.After(r.o.BootTimeout)
	for {
		on, err := r.o.OnBuild(ctx, node)
		onBuild := err == nil && on == build
		if onBuild && r.o.Last(node).GetState() == apiv1.UpdateState_UPDATE_STATE_COMMITTED {
			r.report(ctx, build, node, Succeeded, "trusted on build "+build+" and committed (seen after the verifier restarted)")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-until:
			if onBuild {
				r.report(ctx, build, node, Succeeded, fmt.Sprintf("trusted on build %s %s after the verifier restarted, longer than a trial lasts", build, r.o.BootTimeout))
			} else {
				r.report(ctx, build, node, Failed, fmt.Sprintf("not trusted on build %s within %s of the verifier's restart (attest node shows its update)", build, r.o.BootTimeout))
			}
			return
		case <-events:
		case <-tick.C:
		}
	}
}
