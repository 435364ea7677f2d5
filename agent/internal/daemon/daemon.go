// Package daemon runs the agent: it opens the TPM (one handle, for
// attestation and for the runtime PCR), keeps the AK, starts the GPU
// service and the workload manager, and holds a session with the
// verifier, reconnecting with backoff.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/rigos/rigos/agent/internal/config"
	"github.com/rigos/rigos/agent/internal/gpus"
	"github.com/rigos/rigos/agent/internal/installer"
	"github.com/rigos/rigos/agent/internal/workload"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/attestation/collect"
	"github.com/rigos/rigos/pkg/bootslot"
	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpupipe"
	"github.com/rigos/rigos/pkg/hwinfo"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
	"github.com/rigos/rigos/pkg/tpm"
)

// Version is the agent version reported to the verifier.
var Version = "dev"

// Run runs the agent until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	if cfg.Containerd != "" && cfg.TPM != "device" {
		return errors.New("workloads need a TPM device (tpm: device): their measurements go into the runtime PCR")
	}
	t, err := openTPM(cfg, log)
	if err != nil {
		return err
	}
	defer t.close()
	conn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	node, stop, err := newNode(ctx, cfg, t, log)
	if err != nil {
		return err
	}
	defer stop()
	return reconnect(ctx, cfg, apiv1.NewAttestationClient(conn), node, log)
}

// ErrReboot is returned by Run when the node must reboot (an install
// finished): the agent exits with layout.ExitReboot and init reboots.
var ErrReboot = errors.New("rebooting: the node asked for it")

// newInstaller returns the installer of a node whose configuration
// allows installs, nil otherwise. The booted slot comes from the kernel
// command line.
func newInstaller(cfg *config.Config, out *session.Outbox, log *slog.Logger) (*installer.Installer, error) {
	if !cfg.Install {
		return nil, nil
	}
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	args, err := cmdline.Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("kernel command line: %w", err)
	}
	slot, err := layout.ParseSlot(args[layout.SlotParam])
	if err != nil {
		return nil, fmt.Errorf("kernel command line: %s: %w", layout.SlotParam, err)
	}
	inst := &installer.Installer{Out: out, Log: log, Slot: slot}
	// Updates fetched over HTTPS are verified against the measured CA
	// bundle only, as registries are.
	if c, err := installer.HTTPSClient(layout.InSystem(layout.CARoots)); err == nil {
		inst.Client = c
	} else {
		log.Info("no CA roots: updates are streamed, not fetched over HTTPS", "err", err)
	}
	if cfg.TPM != "simulator" { // the state is sealed by the node's TPM
		openTPM := func() (io.ReadWriteCloser, error) { return tpm.Open(cfg.TPMPaths...) }
		inst.HandOver = func(uki io.ReaderAt, build string) error { return handOver(openTPM, uki, build) }
		inst.Committed = func() error { return dropOtherKeys(openTPM) }
		inst.CanCommit = func() string {
			u, err := readStateSeal()
			switch {
			case err != nil:
				return "this build did not open the state"
			case u.Key == "":
				return "this build holds no key of its own in the state"
			}
			return ""
		}
	}
	return inst, nil
}

// dial makes the TLS connection to the verifier (gRPC connects lazily).
func dial(cfg *config.Config) (*grpc.ClientConn, error) {
	ca, err := os.ReadFile(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no PEM certificate", cfg.CACert)
	}
	return grpc.NewClient(cfg.Verifier,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS13})),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)
}

// newNode describes the rig for its sessions and starts what runs beside
// them: the GPU service and the workload manager. stop ends them.
func newNode(ctx context.Context, cfg *config.Config, t nodeTPM, log *slog.Logger) (session.Node, func(), error) {
	stop := func() {}
	nodeID := cfg.NodeID
	if nodeID == "" {
		ek, err := t.att.EKPublic()
		if err != nil {
			return session.Node{}, stop, err
		}
		nodeID = NodeIDFromEK(ek)
	}
	cg := selfCgroup()
	weight, _ := os.ReadFile(filepath.Join(layout.CgroupRoot, cg, "cpu.weight"))
	log.Info("agent starting", "node", nodeID, "verifier", cfg.Verifier, "cgroup", cg, "cpu_weight", strings.TrimSpace(string(weight)))

	out := session.NewOutbox(log)
	node := session.Node{ID: nodeID, Version: Version, TPM: t.att, RuntimeLog: t.runtimeLog, Logger: log, Outbox: out,
		Hardware: readHardware(hwinfo.DefaultDir, log)}
	// The agent's own measurements (GPUs, workloads) go into the runtime
	// log and PCR through the session's TPM handle.
	var rec *measure.Recorder
	if cfg.Containerd != "" || cfg.GPUs == "auto" {
		var err error
		if rec, err = t.recorder(); err != nil && cfg.Containerd != "" {
			return session.Node{}, stop, err
		}
		if err != nil {
			log.Error("opening the runtime log: this node offers no GPUs", "err", err)
		}
	}
	var gpuSvc *gpus.Service
	if cfg.GPUs == "auto" && rec != nil {
		gpuSvc, stop = startGPUs(ctx, cfg, out, record(rec), log)
	}
	if rec != nil {
		node.OnVerdict = func(v *apiv1.Verdict) { compactRuntimeLog(rec, v.GetRuntimeCheckpoint(), log) }
	}
	if cfg.Containerd != "" {
		startWorkloads(ctx, cfg, &node, rec, gpuSvc, log)
	}
	inst, err := newInstaller(cfg, out, log)
	if err != nil {
		log.Error("installs disabled", "err", err)
	}
	if inst != nil {
		if m, ok := node.Workloads.(*workload.Manager); ok {
			inst.Busy, inst.Hold = m.Running, m.Hold
		}
		node.Install, node.End = inst.Handle, inst.Done()
		node.Update, node.UpdateChunk = inst.HandleUpdate, inst.HandleUpdateChunk
		watchTrial(inst, &node, log)
	}
	return node, stop, nil
}

// watchTrial, on a trial boot of an update (bootslot.Detect), commits
// it on the node's first trusted verdict. Init reboots into the old slot
// if that does not happen in time.
func watchTrial(inst *installer.Installer, node *session.Node, log *slog.Logger) {
	trial, err := bootslot.Detect(layout.EFIVarsDir, inst.Slot)
	if err != nil {
		log.Error("reading the boot variables: an update booted now would not be committed", "err", err)
		return
	}
	if trial == nil {
		return
	}
	log.Info("trial boot of an update: committed on the first trusted verdict", "slot", trial.Slot, "entry", fmt.Sprintf("Boot%04X", trial.Entry))
	prev := node.OnVerdict
	node.OnVerdict = func(v *apiv1.Verdict) {
		if prev != nil {
			prev(v)
		}
		if v.GetState() == apiv1.NodeState_NODE_STATE_TRUSTED {
			go inst.Commit(trial)
		}
	}
}

// startWorkloads starts the workload manager and hands it the node's
// workload messages and verdicts.
func startWorkloads(ctx context.Context, cfg *config.Config, node *session.Node, rec *measure.Recorder, gpuSvc *gpus.Service, log *slog.Logger) {
	mgr := workloads(cfg, record(rec), node.Outbox, log)
	if gpuSvc != nil {
		mgr.SetGPUs(gpuSvc.Count(), gpuSvc.Healthy)
	}
	// Nothing an earlier agent started may run unsupervised.
	recovered := mgr.Recover(ctx)
	go func() {
		if err := <-recovered; err != nil {
			log.Error("stopping workloads left from before", "err", err)
		}
	}()
	go mgr.Watch(ctx)
	node.Workloads = mgr
	node.AskPlan, node.AskPlanError = mgr.AskPlan, mgr.AskPlanError
	node.OnVerdict = func(v *apiv1.Verdict) {
		mgr.Verdict(v)
		compactRuntimeLog(rec, v.GetRuntimeCheckpoint(), log)
		log.Info("agent resources", "rss_kib", workload.ProcKiB("/proc/self/status", "VmRSS"), "workloads", len(mgr.Running()))
	}
	log.Info("workloads enabled", "containerd", cfg.Containerd, "plan_cpus", mgr.Plan().CPUs, "plan_memory_mb", mgr.Plan().MemoryMB)
}

// reconnect runs sessions until ctx ends, with jittered exponential
// backoff between them.
func reconnect(ctx context.Context, cfg *config.Config, client apiv1.AttestationClient, node session.Node, log *slog.Logger) error {
	backoff := cfg.ReconnectMin.D()
	for {
		start := time.Now()
		err := session.Run(ctx, client, node)
		if ctx.Err() != nil {
			return nil
		}
		if node.End != nil {
			select {
			case <-node.End:
				log.Info("session closed for a reboot", "err", err)
				return ErrReboot
			default:
			}
		}
		if time.Since(start) > time.Minute {
			backoff = cfg.ReconnectMin.D()
		}
		log.Warn("session ended; reconnecting", "err", err, "in", backoff)
		// Jitter spreads reconnects of many rigs after a verifier restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return nil
		case <-node.End: // nil without an installer: never ready
			return ErrReboot
		case <-time.After(wait):
		}
		backoff = min(2*backoff, cfg.ReconnectMax.D())
	}
}

// CompactAbove is the runtime log size from which the agent replaces the
// records a passing appraisal covered with the verifier's checkpoint.
const CompactAbove = measure.MaxLogBytes / 4

// compactRuntimeLog compacts the runtime log with the checkpoint a
// trusted verdict carried, once the log has grown past CompactAbove.
func compactRuntimeLog(rec *measure.Recorder, checkpoint []byte, log *slog.Logger) {
	if len(checkpoint) == 0 || rec.Size() < CompactAbove {
		return
	}
	before := rec.Size()
	if err := rec.Compact(checkpoint); err != nil {
		log.Error("compacting the runtime log", "err", err)
		return
	}
	log.Info("runtime log compacted", "bytes_before", before, "bytes_after", rec.Size())
}

// workloads returns the workload manager: containerd as the runtime,
// measurements through record, events and output through out.
func workloads(cfg *config.Config, record func(kind string, data []byte) error, out *session.Outbox, log *slog.Logger) *workload.Manager {
	plan := cfg.Plan
	planJSON, planErr := readPlan(cfg.PlanFile, &plan)
	if planErr != nil {
		log.Error("ASK plan unusable: this node takes no workloads until it is fixed", "file", cfg.PlanFile, "err", planErr)
	}
	if plan.CPUs == 0 {
		plan.CPUs = float64(runtime.NumCPU())
	}
	if plan.MemoryMB == 0 {
		plan.MemoryMB = workload.MemTotal() >> 20
	}
	m := workload.New(&workload.Containerd{Socket: cfg.Containerd, Net: workload.NewNetwork(), CDIDir: cfg.CDIDir}, plan, cfg.ScratchDir, record, out, log)
	m.SetPlanError(planErr)
	m.AskPlan, m.AskPlanError = planJSON, errString(planErr)
	return m
}

// record measures one event with rec (nil: refused).
func record(rec *measure.Recorder) func(kind string, data []byte) error {
	return func(kind string, data []byte) error {
		if rec == nil {
			return errors.New("no runtime log to measure into")
		}
		_, err := rec.Record(kind, data)
		return err
	}
}

// selfCgroup is the agent's cgroup v2 path ("" if unknown).
func selfCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// readPlan applies the supplier's ASK plan at path, if there is one, to
// plan and returns it as JSON for the verifier.
func readPlan(path string, plan *askplan.Plan) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	ask, err := askplan.Parse(b)
	if err != nil {
		return "", err
	}
	*plan = *ask
	j, err := json.Marshal(ask)
	return string(j), err
}

// readHardware reads the node's SMBIOS inventory once, for the hello. VMs
// and some boards have no SMBIOS tables: the hello then goes without it.
func readHardware(dir string, log *slog.Logger) *hwinfo.Inventory {
	inv, err := hwinfo.Read(dir)
	if err != nil {
		log.Warn("no hardware inventory for the verifier", "err", err)
		return nil
	}
	log.Info("hardware", "system", inv.System.Manufacturer+" "+inv.System.Product, "sockets", len(inv.Processors),
		"cores", inv.Cores(), "memory_bytes", inv.MemoryBytes)
	return inv
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// startGPUs starts the GPU service when NVML finds GPUs; it reports
// their health to the verifier through out when a session opens and
// every gpus.ReportInterval after. It returns nil when the node offers
// no GPUs, and a function closing the GPU source.
func startGPUs(ctx context.Context, cfg *config.Config, out *session.Outbox, record func(string, []byte) error, log *slog.Logger) (*gpus.Service, func()) {
	src, closeSrc, err := openGPUs(ctx, layout.InSystem(layout.GPUHelper), log)
	if err == nil {
		var svc *gpus.Service
		if svc, err = gpus.Start(ctx, src, record, cfg.CDIDir, layout.InSystem(layout.NvidiaDir), log); err == nil {
			svc.ReportTo(ctx, out, gpus.ReportInterval)
			return svc, closeSrc
		}
		closeSrc()
	}
	if errors.Is(err, gpu.ErrNoDriver) {
		log.Info("no NVIDIA driver (NVML): this node offers no GPUs", "err", err)
	} else {
		log.Error("starting the GPU service: this node offers no GPUs", "err", err)
	}
	return nil, func() {}
}

// The GPU helper benchmarks the GPUs for the GPU service.
var _ gpus.Benchmarker = (*gpupipe.Restarting)(nil)

// openGPUs opens the GPUs: through the GPU helper at helper when the
// image carries one (the agent in the image is static and cannot load
// NVML), else through NVML in this process. A helper that finds no
// driver says so when it is first asked (gpu.ErrNoDriver).
func openGPUs(ctx context.Context, helper string, log *slog.Logger) (gpus.Source, func(), error) {
	if _, err := os.Stat(helper); err == nil {
		// A helper that crashes or hangs is started again (at most every
		// gpupipe.DefaultRestartBackoff).
		c, err := gpupipe.NewRestarting(func() (*gpupipe.Client, error) {
			return gpupipe.Start(ctx, helper, gpupipe.WithLogger(log.With("helper", helper)))
		}, 0)
		if err != nil {
			return nil, nil, err
		}
		log.Info("reading GPUs through the GPU helper", "helper", helper)
		return c, func() { c.Close() }, nil
	}
	mon, err := gpu.Open(nil, gpu.Limits{})
	if err != nil {
		return nil, nil, fmt.Errorf("opening NVML: %w", err)
	}
	return mon, func() { mon.Close() }, nil
}

// NodeIDFromEK derives a node ID from the EK public key (PKIX DER): the
// start of the fingerprint the verifier pins.
func NodeIDFromEK(ekDER []byte) string {
	return "rig-" + attestation.Fingerprint(ekDER)[:16]
}

// nodeTPM is the agent's one TPM handle: attestation for the session,
// and the runtime log and PCR the agent measures GPUs and workloads into.
type nodeTPM struct {
	att        session.TPM
	runtimeLog func() ([]byte, error)
	// recorder opens the runtime log for the agent's own measurements,
	// extending the runtime PCR through att.
	recorder func() (*measure.Recorder, error)
	close    func()
}

func openTPM(cfg *config.Config, log *slog.Logger) (nodeTPM, error) {
	if cfg.TPM == "simulator" {
		return openSimulator(cfg, log)
	}
	dev, err := tpm.Open(cfg.TPMPaths...)
	if err != nil {
		return nodeTPM{}, err
	}
	blobPath := filepath.Join(cfg.StateDir, "ak.blob")
	blob, err := os.ReadFile(blobPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		dev.Close()
		return nodeTPM{}, err
	}
	att, err := collect.Open(dev, blob)
	if err != nil && len(blob) > 0 {
		log.Warn("stored AK unusable; creating a new one", "err", err)
		att, err = collect.Open(dev, nil)
	}
	if err != nil {
		dev.Close()
		return nodeTPM{}, err
	}
	if b, err := att.AKBlob(); err == nil {
		if err := os.WriteFile(blobPath, b, 0o600); err != nil {
			log.Warn("cannot keep the AK; it will be re-activated after a restart", "err", err)
		}
	}
	runtimeLog := func() ([]byte, error) {
		b, err := os.ReadFile(cfg.RuntimeLog)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	return nodeTPM{
		att: att, runtimeLog: runtimeLog, close: func() { att.Close() },
		recorder: func() (*measure.Recorder, error) { return measure.NewRecorder(cfg.RuntimeLog, att.Extend) },
	}, nil
}
