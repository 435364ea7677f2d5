// Package workload runs the platform's workloads on the node with
// containerd: it receives or pulls the OCI image, checks the request
// against the node's ASK plan and trust, measures the workload into the
// runtime PCR before it starts, enforces its limits with cgroup v2,
// streams its output back, and kills trusted-tier workloads (wiping their
// scratch space) as soon as the node loses its trusted verdict.
package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
)

// Runtime runs containers. Containerd is the real one.
type Runtime interface {
	// Prepare makes the image available: imported from archive (a path,
	// when not empty) or pulled. It returns the image's manifest digest.
	Prepare(ctx context.Context, spec *apiv1.WorkloadSpec, archive string) (Image, error)
	// Run creates the container and starts it after measure succeeds;
	// it returns when the container has exited.
	Run(ctx context.Context, r RunRequest) (Exit, error)
	// Cleanup kills and deletes every workload container left from
	// before (an agent restart, a reboot) and returns their IDs.
	Cleanup(ctx context.Context) ([]string, error)
}

// Image is a prepared image.
type Image struct {
	Ref, Digest string
	handle      any
}

// RunRequest is one container to run.
type RunRequest struct {
	Spec    *apiv1.WorkloadSpec
	Image   Image
	Scratch string
	GPUs    []int
	Stdout  func([]byte)
	Stderr  func([]byte)
	// Measure is called with the SHA-256 of the final OCI runtime spec,
	// after the container is created and before its process starts; an
	// error stops the start.
	Measure func(config string) error
	// Started is called once the process runs; kill then stops it.
	Started func(kill func())
}

// Exit is how a container ended.
type Exit struct {
	Code      int
	OOMKilled bool
}

// Manager is the node's workload manager.
type Manager struct {
	// AskPlan (JSON) and AskPlanError are what the node reports about
	// the supplier's ASK plan.
	AskPlan, AskPlanError string

	rt      Runtime
	out     *session.Outbox
	plan    askplan.Plan
	scratch string
	record  func(kind string, data []byte) error
	log     *slog.Logger
	now     func() time.Time

	mu           sync.Mutex
	trusted      bool
	trustedUntil time.Time
	trustReason  string
	// detached is when the session carrying the trusted verdict ended;
	// zero while a verdict is fresh on a live session.
	detached  time.Time
	running   map[string]*workload
	gpusInUse map[int]bool
	gpuOK     func(index int) bool
	ready     chan struct{} // closed when Recover is done (nil: no recovery)
	planErr   error         // the ASK plan is unusable: no workloads
	held      string        // why no workload may start now ("": they may)
}

// Hold refuses every new workload, naming why, until release is called
// (an install runs, and ends in a reboot). It returns false, and holds
// nothing, when workloads are running.
func (m *Manager) Hold(why string) (release func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.running) > 0 {
		return func() {}, false
	}
	m.held = why
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.held == why {
			m.held = ""
		}
	}, true
}

// DisconnectGrace is how long trusted-tier workloads outlive the session
// that carried the node's trusted verdict: a reconnect and a fresh
// appraisal fit well inside it; a rig cut off from its verifier (an owner
// pulling the cable to stop spot checks) loses its trusted-tier work
// within seconds rather than at trusted_until.
const DisconnectGrace = 20 * time.Second

type workload struct {
	spec    *apiv1.WorkloadSpec
	archive *os.File
	size    int64
	kill    func()
	killed  string // reason, once killed by the node
	gpus    []int
	cancel  context.CancelFunc
}

// New returns a Manager for what the node offers: plan, with CPUs and
// memory filled in (see daemon). record measures an event into the
// runtime PCR and log (measure.Recorder.Record). Events and output go to
// the verifier through out; the manager times DisconnectGrace from its
// detaching.
func New(rt Runtime, plan askplan.Plan, scratch string, record func(kind string, data []byte) error, out *session.Outbox, log *slog.Logger) *Manager {
	m := &Manager{rt: rt, out: out, plan: plan, scratch: scratch, record: record, log: log, now: time.Now,
		running: map[string]*workload{}, gpusInUse: map[int]bool{}, gpuOK: func(int) bool { return true }}
	out.OnDetach(m.detach)
	return m
}

// SetGPUs tells the manager the node's GPUs: count found, and whether
// one is healthy (unhealthy GPUs are not given to workloads). A plan
// offering no GPUs offers all found; one offering more is capped.
func (m *Manager) SetGPUs(count int, healthy func(index int) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.plan.GPUs == 0 || m.plan.GPUs > count {
		m.plan.GPUs = count
	}
	m.gpuOK = healthy
}

// SetPlanError makes the node refuse every workload, naming err (an
// unusable ASK plan).
func (m *Manager) SetPlanError(err error) {
	m.mu.Lock()
	m.planErr = err
	m.mu.Unlock()
}

// detach notes when the session carrying the verdict ended.
func (m *Manager) detach() {
	m.mu.Lock()
	if m.detached.IsZero() {
		m.detached = m.now()
	}
	m.mu.Unlock()
}

func (m *Manager) event(id string, state apiv1.WorkloadState, reason string, mod func(*apiv1.WorkloadEvent)) {
	e := &apiv1.WorkloadEvent{Id: id, State: state, Reason: reason, UnixMs: m.now().UnixMilli()}
	if mod != nil {
		mod(e)
	}
	final := state == apiv1.WorkloadState_WORKLOAD_STATE_EXITED || state == apiv1.WorkloadState_WORKLOAD_STATE_KILLED ||
		state == apiv1.WorkloadState_WORKLOAD_STATE_FAILED
	m.log.Info("workload", "id", id, "state", state, "reason", reason, "exit", e.GetExitCode(), "oom", e.GetOomKilled())
	msg := &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadEvent{WorkloadEvent: e}}
	if final {
		m.out.Deliver(msg) // the verifier waits for it
		return
	}
	m.out.Send(msg)
}

// Verdict takes the verifier's latest verdict. Losing "trusted" kills
// every trusted-tier workload at once.
func (m *Manager) Verdict(v *apiv1.Verdict) {
	m.mu.Lock()
	if v.GetState() == apiv1.NodeState_NODE_STATE_TRUSTED {
		m.trusted, m.trustedUntil, m.trustReason = true, time.UnixMilli(v.GetTrustedUntilUnixMs()), ""
		m.detached = time.Time{}
		m.mu.Unlock()
		return
	}
	m.trusted, m.trustReason = false, fmt.Sprintf("node demoted to %s: %s", v.GetState().Name(), v.GetReason())
	reason := m.trustReason
	m.mu.Unlock()
	m.killTrusted(reason)
}

// CheckTrust kills trusted-tier workloads once the trusted verdict has
// expired without a fresh one (a missed or late appraisal), or the
// session that carried it ended DisconnectGrace ago without a fresh one
// on a new session. Call it periodically (Watch does).
func (m *Manager) CheckTrust() {
	m.mu.Lock()
	now := m.now()
	expired := m.trusted && !now.Before(m.trustedUntil)
	cut := m.trusted && !m.detached.IsZero() && now.Sub(m.detached) >= DisconnectGrace
	switch {
	case expired:
		m.trusted = false
		m.trustReason = "trusted verdict expired at " + m.trustedUntil.UTC().Format(time.RFC3339) + " without a fresh appraisal"
	case cut:
		expired = true
		m.trusted = false
		m.trustReason = fmt.Sprintf("connection to the verifier lost at %s and no fresh trusted verdict within %s",
			m.detached.UTC().Format(time.RFC3339), DisconnectGrace)
	}
	reason := m.trustReason
	m.mu.Unlock()
	if expired {
		m.killTrusted(reason)
	}
}

// Watch runs CheckTrust every second until ctx ends.
func (m *Manager) Watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.CheckTrust()
		}
	}
}

func (m *Manager) trustedNow() (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.trusted {
		if m.trustReason == "" {
			return false, "node has no trusted verdict yet"
		}
		return false, m.trustReason
	}
	if !m.now().Before(m.trustedUntil) {
		return false, "trusted verdict expired"
	}
	if !m.detached.IsZero() {
		return false, "no session with the verifier since the trusted verdict"
	}
	return true, ""
}

func (m *Manager) killTrusted(reason string) {
	m.mu.Lock()
	var victims []*workload
	for _, w := range m.running {
		if w.spec.GetTrustedTier() && w.killed == "" {
			w.killed = reason
			victims = append(victims, w)
		}
	}
	m.mu.Unlock()
	for _, w := range victims {
		m.log.Warn("killing trusted-tier workload", "id", w.spec.GetId(), "reason", reason)
		w.stop()
	}
}

func (w *workload) stop() {
	if w.kill != nil {
		w.kill()
	}
	if w.cancel != nil {
		w.cancel() // not started yet: stop preparing
	}
}

// Handle processes a workload message from the verifier.
func (m *Manager) Handle(msg *apiv1.VerifierMessage) {
	switch {
	case msg.GetStartWorkload() != nil:
		m.start(msg.GetStartWorkload().GetSpec())
	case msg.GetImageChunk() != nil:
		m.chunk(msg.GetImageChunk())
	case msg.GetStopWorkload() != nil:
		m.Stop(msg.GetStopWorkload().GetId(), msg.GetStopWorkload().GetReason())
	}
}

// Stop kills a workload with reason.
func (m *Manager) Stop(id, reason string) {
	m.mu.Lock()
	w, ok := m.running[id]
	if ok && w.killed == "" {
		w.killed = reason
	}
	m.mu.Unlock()
	if !ok {
		m.event(id, apiv1.WorkloadState_WORKLOAD_STATE_FAILED, "no such workload on this node", nil)
		return
	}
	w.stop()
}

// check validates a spec against the plan, the node's trust and what is
// free; it returns the GPUs to give the workload.
func (m *Manager) check(s *apiv1.WorkloadSpec) ([]int, error) {
	var errs []error
	if err := s.Validate(); err != nil {
		errs = append(errs, err)
	}
	r := s.GetResources()
	if r.GetCpus() > m.plan.CPUs {
		errs = append(errs, fmt.Errorf("cpus %.2f beyond the node's ASK plan (%.2f)", r.GetCpus(), m.plan.CPUs))
	}
	if r.GetMemoryBytes() > m.plan.MemoryMB<<20 {
		errs = append(errs, fmt.Errorf("memory %d MiB beyond the node's ASK plan (%d MiB)", r.GetMemoryBytes()>>20, m.plan.MemoryMB))
	}
	if d := time.Duration(s.GetMaxDurationMs()) * time.Millisecond; d > m.plan.MaxDuration.D() {
		errs = append(errs, fmt.Errorf("max duration %s beyond the node's ASK plan (%s)", d, m.plan.MaxDuration.D()))
	}
	if err := checkRegistryAuth(s); err != nil {
		errs = append(errs, err)
	}
	if free := freeBytes(m.scratch); r.GetScratchBytes() > 0 && r.GetScratchBytes() > free {
		errs = append(errs, fmt.Errorf("not enough disk: %d MiB of scratch asked, %d MiB free", r.GetScratchBytes()>>20, free>>20))
	}
	m.mu.Lock()
	planErr := m.planErr
	m.mu.Unlock()
	if planErr != nil {
		errs = append(errs, fmt.Errorf("this node takes no workloads until its ASK plan is fixed: %w", planErr))
	}
	if s.GetTrustedTier() {
		if ok, why := m.trustedNow(); !ok {
			errs = append(errs, fmt.Errorf("trusted tier: %s", why))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held != "" {
		errs = append(errs, errors.New(m.held))
	}
	if _, dup := m.running[s.GetId()]; dup {
		errs = append(errs, fmt.Errorf("workload %s already exists on this node", s.GetId()))
	}
	var gpus []int
	if want := int(r.GetGpus()); want > 0 {
		unhealthy := 0
		for i := 0; i < m.plan.GPUs && len(gpus) < want; i++ {
			switch {
			case !m.gpuOK(i):
				unhealthy++
			case !m.gpusInUse[i]:
				gpus = append(gpus, i)
			}
		}
		if len(gpus) < want {
			errs = append(errs, fmt.Errorf("not enough GPUs: %d asked, %d free of the %d the node offers (%d unhealthy)", want, len(gpus), m.plan.GPUs, unhealthy))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, g := range gpus {
		m.gpusInUse[g] = true
	}
	m.running[s.GetId()] = &workload{spec: s, gpus: gpus}
	return gpus, nil
}

func (m *Manager) start(s *apiv1.WorkloadSpec) {
	if err := apiv1.ValidWorkloadID(s.GetId()); err != nil {
		m.event(s.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED, err.Error(), nil)
		return
	}
	if _, err := m.check(s); err != nil {
		m.event(s.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED, err.Error(), nil)
		return
	}
	m.event(s.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_PREPARING, "", nil)
	if !s.GetImageArchive() {
		go m.run(s.GetId(), "")
		return
	}
	if err := os.MkdirAll(m.scratch, 0o700); err != nil {
		m.finish(s.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED, "scratch space: "+err.Error(), nil)
		return
	}
	f, err := os.CreateTemp(m.scratch, s.GetId()+"-*.image.tar")
	if err != nil {
		m.finish(s.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED, "receiving the image: "+err.Error(), nil)
		return
	}
	m.mu.Lock()
	m.running[s.GetId()].archive = f
	m.mu.Unlock()
}

func (m *Manager) chunk(c *apiv1.ImageChunk) {
	m.mu.Lock()
	w, ok := m.running[c.GetWorkloadId()]
	m.mu.Unlock()
	if !ok || w.archive == nil {
		return // a workload that already failed; its failure was reported
	}
	w.size += int64(len(c.GetData()))
	var err error
	if w.size > apiv1.MaxImageArchive {
		err = fmt.Errorf("image archive larger than %d MiB, the most a workload may send", apiv1.MaxImageArchive>>20)
	} else {
		_, err = w.archive.Write(c.GetData())
	}
	if err == nil && !c.GetLast() {
		return
	}
	name := w.archive.Name()
	if cerr := w.archive.Close(); err == nil {
		err = cerr
	}
	w.archive = nil
	if err != nil {
		os.Remove(name)
		m.finish(c.GetWorkloadId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED, "receiving the image: "+err.Error(), nil)
		return
	}
	go m.run(c.GetWorkloadId(), name)
}

// run prepares the image and runs the container to its end.
func (m *Manager) run(id, archive string) {
	m.mu.Lock()
	w := m.running[id]
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	ready := m.ready
	m.mu.Unlock()
	defer cancel()
	if archive != "" {
		defer os.Remove(archive)
	}
	if ready != nil {
		select {
		case <-ready:
		case <-ctx.Done():
		}
	}
	m.mu.Lock()
	killed := w.killed
	m.mu.Unlock()
	if killed != "" {
		m.finish(id, apiv1.WorkloadState_WORKLOAD_STATE_KILLED, killed, nil)
		return
	}
	s := w.spec
	img, err := m.rt.Prepare(ctx, s, archive)
	if err != nil {
		m.finish(id, m.failedOrKilled(id), err.Error(), nil)
		return
	}
	scratch := filepath.Join(m.scratch, id)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		m.finish(id, apiv1.WorkloadState_WORKLOAD_STATE_FAILED, "scratch space: "+err.Error(), nil)
		return
	}
	state, reason, mod := m.runContainer(ctx, w, img, scratch)
	// Scratch never outlives its workload: it is gone before the final
	// event is reported.
	if err := os.RemoveAll(scratch); err != nil {
		m.log.Error("wiping scratch space", "id", id, "err", err)
	}
	m.finish(id, state, reason, mod)
}

func (m *Manager) runContainer(ctx context.Context, w *workload, img Image, scratch string) (apiv1.WorkloadState, string, func(*apiv1.WorkloadEvent)) {
	s := w.spec
	id := s.GetId()
	limit := m.plan.MaxDuration.D()
	if d := time.Duration(s.GetMaxDurationMs()) * time.Millisecond; d > 0 {
		limit = d
	}
	timer := time.AfterFunc(limit, func() { m.Stop(id, fmt.Sprintf("maximum duration of %s reached", limit)) })
	defer timer.Stop()

	out := func(stderr bool) func([]byte) {
		return func(b []byte) {
			m.out.Send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadLog{WorkloadLog: &apiv1.WorkloadLog{
				Id: id, Data: b, Stderr: stderr,
			}}})
		}
	}
	exit, err := m.rt.Run(ctx, RunRequest{
		Spec: s, Image: img, Scratch: scratch, GPUs: w.gpus, Stdout: out(false), Stderr: out(true),
		Measure: func(config string) error {
			if s.GetTrustedTier() {
				if ok, why := m.trustedNow(); !ok {
					return fmt.Errorf("trusted tier: %s", why)
				}
			}
			wl := measure.Workload{ID: id, Image: img.Ref, Digest: img.Digest, Config: config, TrustedTier: s.GetTrustedTier(),
				Outbound: s.GetNetwork().GetOutbound(), Ports: s.GetNetwork().GetPorts()}
			if err := m.record(measure.KindWorkload, wl.Encode()); err != nil {
				return fmt.Errorf("measuring the workload: %w", err)
			}
			return nil
		},
		Started: func(kill func()) {
			m.mu.Lock()
			w.kill = kill
			killed := w.killed
			m.mu.Unlock()
			m.event(id, apiv1.WorkloadState_WORKLOAD_STATE_RUNNING, "", func(e *apiv1.WorkloadEvent) { e.ImageDigest = img.Digest })
			if killed != "" {
				kill() // demoted between the measurement and the start
			}
		},
	})
	if err != nil {
		return m.failedOrKilled(id), err.Error(), nil
	}
	m.mu.Lock()
	reason := w.killed
	m.mu.Unlock()
	state := apiv1.WorkloadState_WORKLOAD_STATE_EXITED
	if reason != "" {
		state = apiv1.WorkloadState_WORKLOAD_STATE_KILLED
	} else if exit.OOMKilled {
		reason = "out of memory: killed at its memory limit"
	}
	return state, reason, func(e *apiv1.WorkloadEvent) {
		e.ExitCode, e.OomKilled, e.ImageDigest = int32(exit.Code), exit.OOMKilled, img.Digest
	}
}

func (m *Manager) failedOrKilled(id string) apiv1.WorkloadState {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.running[id]; ok && w.killed != "" {
		return apiv1.WorkloadState_WORKLOAD_STATE_KILLED
	}
	return apiv1.WorkloadState_WORKLOAD_STATE_FAILED
}

// finish forgets a workload and reports its final event.
func (m *Manager) finish(id string, state apiv1.WorkloadState, reason string, mod func(*apiv1.WorkloadEvent)) {
	m.mu.Lock()
	if w, ok := m.running[id]; ok {
		if w.killed != "" && state == apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
			reason = w.killed
		}
		for _, g := range w.gpus {
			delete(m.gpusInUse, g)
		}
		delete(m.running, id)
	}
	m.mu.Unlock()
	m.event(id, state, reason, mod)
}

// Recover stops what an earlier agent left running: containers it can
// no longer supervise (after a restart) or records of containers from
// before a reboot, and their scratch space. Each is reported as killed.
// It returns at once (containerd may still be starting); new workloads
// wait for it before they start. Call it once, before the first session.
func (m *Manager) Recover(ctx context.Context) <-chan error {
	// Scratch space first, at once: nothing can be receiving yet.
	if entries, err := os.ReadDir(m.scratch); err == nil {
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(m.scratch, e.Name()))
		}
	}
	ready := make(chan struct{})
	m.mu.Lock()
	m.ready = ready
	m.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		defer close(ready)
		ids, err := m.rt.Cleanup(ctx)
		for _, id := range ids {
			m.event(id, apiv1.WorkloadState_WORKLOAD_STATE_KILLED, "the agent restarted; the workload was stopped", nil)
		}
		errc <- err
	}()
	return errc
}

// Plan returns the node's plan.
func (m *Manager) Plan() askplan.Plan {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.plan
}

// MemTotal returns the machine's memory in bytes (0 if unknown).
func MemTotal() int64 { return ProcKiB("/proc/meminfo", "MemTotal") << 10 }

// ProcKiB reads a "Field: N kB" line from a /proc file (0 if absent).
func ProcKiB(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// Running returns the IDs of the workloads on the node.
func (m *Manager) Running() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id := range m.running {
		out = append(out, id)
	}
	return out
}
