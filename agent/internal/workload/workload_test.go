package workload

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
)

// fakeRuntime stands in for containerd in these tests of the manager's
// rules; the real runtime is exercised in the VM tests (testvm).
type fakeRuntime struct {
	mu       sync.Mutex
	leftover []string      // containers from before
	hold     chan struct{} // Cleanup waits for it when set
	early    bool          // Prepare ran while Cleanup was held
	archives []string      // contents of received archives
	scratch  string
	gpus     []int // GPUs given, over all runs
	block    bool  // run until killed
	oom      bool
}

func (f *fakeRuntime) Prepare(_ context.Context, s *apiv1.WorkloadSpec, archive string) (Image, error) {
	if f.hold != nil {
		select {
		case <-f.hold:
		default:
			f.mu.Lock()
			f.early = true
			f.mu.Unlock()
		}
	}
	if archive != "" {
		b, err := os.ReadFile(archive)
		if err != nil {
			return Image{}, err
		}
		f.mu.Lock()
		f.archives = append(f.archives, string(b))
		f.mu.Unlock()
	}
	if s.GetImage() == "absent" {
		return Image{}, errors.New("image not found: absent")
	}
	return Image{Ref: "img", Digest: "sha256:abc"}, nil
}

func (f *fakeRuntime) Cleanup(context.Context) ([]string, error) {
	if f.hold != nil {
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.leftover
	f.leftover = nil
	return ids, nil
}

func (f *fakeRuntime) Run(ctx context.Context, r RunRequest) (Exit, error) {
	f.mu.Lock()
	f.scratch = r.Scratch
	f.gpus = append(f.gpus, r.GPUs...)
	f.mu.Unlock()
	if err := os.WriteFile(filepath.Join(r.Scratch, "data"), []byte("x"), 0o600); err != nil {
		return Exit{}, err
	}
	if err := r.Measure("sha256:cfg"); err != nil {
		return Exit{}, err
	}
	killed := make(chan struct{})
	var once sync.Once
	r.Started(func() { once.Do(func() { close(killed) }) })
	r.Stdout([]byte("out\n"))
	if f.block {
		<-killed
		return Exit{Code: 137}, nil
	}
	return Exit{Code: 0, OOMKilled: f.oom}, nil
}

type harness struct {
	m        *Manager
	out      *session.Outbox
	rt       *fakeRuntime
	mu       sync.Mutex
	events   []*apiv1.WorkloadEvent
	logs     []string
	measured []measure.Workload
	eventsCh chan *apiv1.WorkloadEvent
	failRec  bool
}

func newHarness(t *testing.T) *harness {
	h := &harness{rt: &fakeRuntime{}, eventsCh: make(chan *apiv1.WorkloadEvent, 64)}
	rec := func(kind string, data []byte) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.failRec {
			return errors.New("TPM gone")
		}
		ws, err := measure.Workloads([]measure.Event{{Kind: kind, Data: data}})
		if err != nil {
			return err
		}
		h.measured = append(h.measured, ws...)
		return nil
	}
	plan := askplan.Plan{CPUs: 2, MemoryMB: 1 << 10, GPUs: 1, MaxDuration: config.Duration(time.Hour)}
	h.out = session.NewOutbox(nil)
	h.m = New(h.rt, plan, t.TempDir(), rec, h.out, slog.New(slog.DiscardHandler))
	h.out.Attach(h.send)
	return h
}

func (h *harness) send(m *apiv1.AgentMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := m.GetWorkloadEvent(); e != nil {
		h.events = append(h.events, e)
		select {
		case h.eventsCh <- e:
		default: // wait() looks at h.events anyway
		}
	}
	if l := m.GetWorkloadLog(); l != nil {
		h.logs = append(h.logs, string(l.GetData()))
	}
	return nil
}

// wait returns the first event in state for id, failing if the
// workload fails instead.
func (h *harness) wait(t *testing.T, id string, state apiv1.WorkloadState) *apiv1.WorkloadEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		for _, e := range h.events {
			if e.GetId() != id {
				continue
			}
			if e.GetState() == state {
				h.mu.Unlock()
				return e
			}
			if e.GetState() == apiv1.WorkloadState_WORKLOAD_STATE_FAILED {
				h.mu.Unlock()
				t.Fatalf("%s failed: %s", id, e.GetReason())
			}
		}
		h.mu.Unlock()
		select {
		case <-h.eventsCh: // something happened: look again
		case <-timeout:
			t.Fatalf("no %s event for %s; events so far %v", state, id, h.events)
		}
	}
}

func trusted(h *harness, d time.Duration) {
	h.m.Verdict(&apiv1.Verdict{State: apiv1.NodeState_NODE_STATE_TRUSTED, TrustedUntilUnixMs: time.Now().Add(d).UnixMilli()})
}

func start(h *harness, s *apiv1.WorkloadSpec) {
	h.m.Handle(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_StartWorkload{StartWorkload: &apiv1.StartWorkload{Spec: s}}})
}

func TestRunMeasuresThenStarts(t *testing.T) {
	h := newHarness(t)
	trusted(h, time.Minute)
	start(h, &apiv1.WorkloadSpec{Id: "w1", ImageArchive: true, TrustedTier: true})
	for _, part := range []string{"ab", "cd"} {
		h.m.Handle(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_ImageChunk{ImageChunk: &apiv1.ImageChunk{
			WorkloadId: "w1", Data: []byte(part), Last: part == "cd",
		}}})
	}
	e := h.wait(t, "w1", apiv1.WorkloadState_WORKLOAD_STATE_EXITED)
	if e.GetImageDigest() != "sha256:abc" || e.GetExitCode() != 0 {
		t.Errorf("exit event %v", e)
	}
	if len(h.rt.archives) != 1 || h.rt.archives[0] != "abcd" {
		t.Errorf("runtime got archives %q, want the chunks joined", h.rt.archives)
	}
	if len(h.measured) != 1 || h.measured[0].ID != "w1" || h.measured[0].Digest != "sha256:abc" || h.measured[0].Config != "sha256:cfg" || !h.measured[0].TrustedTier {
		t.Errorf("measured %+v", h.measured)
	}
	if strings.Join(h.logs, "") != "out\n" {
		t.Errorf("logs %q", h.logs)
	}
	if _, err := os.Stat(h.rt.scratch); !os.IsNotExist(err) {
		t.Errorf("scratch %s survived its workload: %v", h.rt.scratch, err)
	}
	if len(h.m.Running()) != 0 {
		t.Errorf("still running: %v", h.m.Running())
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	cases := map[string]struct {
		spec *apiv1.WorkloadSpec
		want string
	}{
		"bad id":       {&apiv1.WorkloadSpec{Id: "../x"}, "workload id"},
		"untrusted":    {&apiv1.WorkloadSpec{Id: "t", TrustedTier: true}, "no trusted verdict"},
		"cpus":         {&apiv1.WorkloadSpec{Id: "c", Resources: &apiv1.Resources{Cpus: 2.5}}, "cpus 2.50 beyond the node's ASK plan"},
		"memory":       {&apiv1.WorkloadSpec{Id: "m", Resources: &apiv1.Resources{MemoryBytes: 2 << 30}}, "memory 2048 MiB beyond"},
		"gpus":         {&apiv1.WorkloadSpec{Id: "g", Resources: &apiv1.Resources{Gpus: 2}}, "not enough GPUs: 2 asked, 1 free"},
		"duration":     {&apiv1.WorkloadSpec{Id: "d", MaxDurationMs: (2 * time.Hour).Milliseconds()}, "max duration 2h0m0s beyond"},
		"port":         {&apiv1.WorkloadSpec{Id: "n", Network: &apiv1.NetworkPolicy{Ports: []uint32{70000}}}, "port 70000 out of range"},
		"negative":     {&apiv1.WorkloadSpec{Id: "neg", Resources: &apiv1.Resources{Pids: -1}}, "negative"},
		"image absent": {&apiv1.WorkloadSpec{Id: "i", Image: "absent"}, "image not found"},
		"scratch":      {&apiv1.WorkloadSpec{Id: "s", Resources: &apiv1.Resources{ScratchBytes: 1 << 60}}, "not enough disk"},
		"credentials in clear": {&apiv1.WorkloadSpec{Id: "clear", Image: "reg.example/x:1",
			RegistryAuth: &apiv1.RegistryAuth{Username: "u", Password: "p", PlainHttp: true}}, "registry credentials over plain HTTP refused"},
		"several at once": {&apiv1.WorkloadSpec{Id: "many", Resources: &apiv1.Resources{Cpus: 9, Gpus: 5}}, "cpus 9.00"},
	}
	for name, c := range cases {
		start(h, c.spec)
		e := h.wait(t, c.spec.GetId(), apiv1.WorkloadState_WORKLOAD_STATE_FAILED)
		if !strings.Contains(e.GetReason(), c.want) {
			t.Errorf("%s: reason %q, want %q", name, e.GetReason(), c.want)
		}
	}
	if len(h.measured) != 0 {
		t.Errorf("refused workloads were measured: %+v", h.measured)
	}
}

func TestDemotionKillsTrustedTier(t *testing.T) {
	h := newHarness(t)
	h.rt.block = true
	trusted(h, time.Minute)
	start(h, &apiv1.WorkloadSpec{Id: "gold", TrustedTier: true})
	start(h, &apiv1.WorkloadSpec{Id: "plain"})
	h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	h.wait(t, "plain", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	h.m.Verdict(&apiv1.Verdict{State: apiv1.NodeState_NODE_STATE_UNTRUSTED, Reason: "pcr11: unknown UKI"})
	e := h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_KILLED)
	if !strings.Contains(e.GetReason(), "node demoted to untrusted: pcr11: unknown UKI") {
		t.Errorf("kill reason %q", e.GetReason())
	}
	if got := h.m.Running(); len(got) != 1 || got[0] != "plain" {
		t.Errorf("running after demotion = %v, want only the non-trusted-tier workload", got)
	}
	h.m.Stop("plain", "done")
	if e := h.wait(t, "plain", apiv1.WorkloadState_WORKLOAD_STATE_KILLED); e.GetReason() != "done" {
		t.Errorf("stop reason %q", e.GetReason())
	}
}

func TestExpiredVerdictKills(t *testing.T) {
	h := newHarness(t)
	h.rt.block = true
	trusted(h, time.Hour)
	start(h, &apiv1.WorkloadSpec{Id: "gold", TrustedTier: true})
	h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	h.m.now = func() time.Time { return time.Now().Add(2 * time.Hour) } // no fresh verdict arrived
	h.m.CheckTrust()
	e := h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_KILLED)
	if !strings.Contains(e.GetReason(), "expired") {
		t.Errorf("kill reason %q", e.GetReason())
	}
}

func TestMeasurementFailureStopsStart(t *testing.T) {
	h := newHarness(t)
	h.failRec = true
	start(h, &apiv1.WorkloadSpec{Id: "w"})
	e := h.wait(t, "w", apiv1.WorkloadState_WORKLOAD_STATE_FAILED)
	if !strings.Contains(e.GetReason(), "measuring the workload: TPM gone") {
		t.Errorf("reason %q", e.GetReason())
	}
}

func TestFinalEventsWaitForASession(t *testing.T) {
	h := newHarness(t)
	h.out.Attach(nil) // the session dropped
	start(h, &apiv1.WorkloadSpec{Id: "w"})
	deadline := time.Now().Add(10 * time.Second)
	for len(h.m.Running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for the workload to end, bounded
	}
	h.out.Attach(h.send)
	h.wait(t, "w", apiv1.WorkloadState_WORKLOAD_STATE_EXITED)
}

func TestArchiveTooLarge(t *testing.T) {
	h := newHarness(t)
	start(h, &apiv1.WorkloadSpec{Id: "big", ImageArchive: true})
	h.m.Handle(&apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_ImageChunk{ImageChunk: &apiv1.ImageChunk{
		WorkloadId: "big", Data: make([]byte, apiv1.MaxImageArchive+1),
	}}})
	e := h.wait(t, "big", apiv1.WorkloadState_WORKLOAD_STATE_FAILED)
	if !strings.Contains(e.GetReason(), "larger than") {
		t.Errorf("reason %q", e.GetReason())
	}
}

func TestUnhealthyGPUsAreNotGiven(t *testing.T) {
	h := newHarness(t)
	h.rt.block = true
	h.m.plan.GPUs = 0                                  // the plan offers every GPU found
	h.m.SetGPUs(2, func(i int) bool { return i != 0 }) // GPU 0 had a fatal Xid
	start(h, &apiv1.WorkloadSpec{Id: "one", Resources: &apiv1.Resources{Gpus: 1}})
	h.wait(t, "one", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	start(h, &apiv1.WorkloadSpec{Id: "two", Resources: &apiv1.Resources{Gpus: 1}})
	e := h.wait(t, "two", apiv1.WorkloadState_WORKLOAD_STATE_FAILED)
	if !strings.Contains(e.GetReason(), "not enough GPUs: 1 asked, 0 free of the 2 the node offers (1 unhealthy)") {
		t.Errorf("reason %q", e.GetReason())
	}
	h.m.Stop("one", "done")
	h.wait(t, "one", apiv1.WorkloadState_WORKLOAD_STATE_KILLED)
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	if len(h.rt.gpus) != 1 || h.rt.gpus[0] != 1 {
		t.Errorf("GPUs given = %v, want only the healthy GPU 1", h.rt.gpus)
	}
}

func TestRecoverStopsLeftovers(t *testing.T) {
	h := newHarness(t)
	h.rt.leftover = []string{"old-1"}
	stale := filepath.Join(h.m.scratch, "old-1")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := <-h.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := h.wait(t, "old-1", apiv1.WorkloadState_WORKLOAD_STATE_KILLED)
	if !strings.Contains(e.GetReason(), "agent restarted") {
		t.Errorf("reason %q", e.GetReason())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale scratch survived: %v", err)
	}
}

func TestStartsWaitForRecovery(t *testing.T) {
	h := newHarness(t)
	h.rt.hold = make(chan struct{})
	h.rt.leftover = []string{"w"} // an old container with the same ID
	done := h.m.Recover(context.Background())
	start(h, &apiv1.WorkloadSpec{Id: "w"})
	h.wait(t, "w", apiv1.WorkloadState_WORKLOAD_STATE_PREPARING)
	close(h.rt.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.wait(t, "w", apiv1.WorkloadState_WORKLOAD_STATE_EXITED)
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	if h.rt.early {
		t.Error("a workload was prepared before the leftovers were stopped")
	}
}

func TestUnusablePlanRefusesEverything(t *testing.T) {
	h := newHarness(t)
	h.m.SetPlanError(errors.New("ASK plan: version 7 (this build reads 1)"))
	start(h, &apiv1.WorkloadSpec{Id: "w"})
	e := h.wait(t, "w", apiv1.WorkloadState_WORKLOAD_STATE_FAILED)
	if !strings.Contains(e.GetReason(), "no workloads until its ASK plan is fixed: ASK plan: version 7") {
		t.Errorf("reason %q", e.GetReason())
	}
}

// A rig cut off from its verifier (the owner pulls the cable to escape
// spot checks) loses its trusted-tier work within DisconnectGrace, long
// before its verdict's trusted_until; a reconnect with a fresh trusted
// verdict inside the grace keeps it.
func TestDisconnectKillsTrustedTier(t *testing.T) {
	h := newHarness(t)
	h.rt.block = true
	trusted(h, time.Hour)
	start(h, &apiv1.WorkloadSpec{Id: "gold", TrustedTier: true})
	start(h, &apiv1.WorkloadSpec{Id: "plain"})
	h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	h.wait(t, "plain", apiv1.WorkloadState_WORKLOAD_STATE_RUNNING)
	send := h.send

	base := time.Now()
	h.m.now = func() time.Time { return base }
	h.out.Attach(nil) // the session dropped
	h.m.now = func() time.Time { return base.Add(DisconnectGrace / 2) }
	h.out.Attach(send) // reconnected, and a fresh verdict came in time
	trusted(h, time.Hour)
	h.m.CheckTrust()
	if got := h.m.Running(); len(got) != 2 {
		t.Fatalf("running after a quick reconnect = %v, want both", got)
	}

	h.out.Attach(nil) // dropped again, for good
	h.m.now = func() time.Time { return base.Add(DisconnectGrace/2 + DisconnectGrace) }
	h.m.CheckTrust()
	h.out.Attach(send) // the final event waits for a session
	e := h.wait(t, "gold", apiv1.WorkloadState_WORKLOAD_STATE_KILLED)
	if !strings.Contains(e.GetReason(), "connection to the verifier lost") {
		t.Errorf("kill reason %q", e.GetReason())
	}
	if got := h.m.Running(); len(got) != 1 || got[0] != "plain" {
		t.Errorf("running = %v, want only the non-trusted-tier workload", got)
	}
}

// Running workloads never share an ID range; a range comes back when its
// workload ends; the ranges sit above the node's own IDs.
func TestIDRanges(t *testing.T) {
	var r idRanges
	seen := map[uint32]bool{}
	var releases []func()
	for range 3 {
		base, release, err := r.take()
		if err != nil {
			t.Fatal(err)
		}
		if seen[base] || base < FirstWorkloadID || (base-FirstWorkloadID)%IDsPerWorkload != 0 {
			t.Fatalf("take() = %d: reused or misaligned (taken %v)", base, seen)
		}
		seen[base] = true
		releases = append(releases, release)
	}
	releases[1]()
	if base, _, _ := r.take(); base != FirstWorkloadID+IDsPerWorkload {
		t.Errorf("take() after a release = %d, want the freed %d", base, FirstWorkloadID+IDsPerWorkload)
	}
	for range MaxIDRanges - 3 {
		if _, _, err := r.take(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.take(); !errors.Is(err, errNoIDRange) {
		t.Errorf("take() with every range in use = %v, want errNoIDRange", err)
	}
	if top := uint64(FirstWorkloadID) + uint64(MaxIDRanges)*IDsPerWorkload; top > 1<<32-1 {
		t.Errorf("ranges end at %d, beyond 32-bit IDs", top)
	}
}

// While an install holds the node, workloads are refused, naming why;
// released, they run again. A node with a workload running cannot be
// held.
func TestHoldRefusesWorkloads(t *testing.T) {
	h := newHarness(t)
	release, ok := h.m.Hold("an install is running")
	if !ok {
		t.Fatal("Hold on an idle node failed")
	}
	start(h, &apiv1.WorkloadSpec{Id: "held", Image: "present"})
	if e := h.wait(t, "held", apiv1.WorkloadState_WORKLOAD_STATE_FAILED); !strings.Contains(e.GetReason(), "an install is running") {
		t.Errorf("held: reason %q", e.GetReason())
	}
	release()
	start(h, &apiv1.WorkloadSpec{Id: "after", Image: "present"})
	h.wait(t, "after", apiv1.WorkloadState_WORKLOAD_STATE_EXITED)
}
