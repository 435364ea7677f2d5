// Package gpus is the agent's GPU service: at start it reads the GPU
// inventory, measures its digest into the runtime PCR (so the verifier
// sees a swapped, added or removed GPU), writes the CDI specification
// containerd gives GPUs to containers with, and keeps watching Xid
// errors; it reports inventory and health to the verifier through the
// session's outbox, whether or not the node runs workloads.
//
// Where the source can also benchmark (the GPU helper), the service runs
// the GPU check (pkg/gpu/gpucheck) in the background at start and again
// whenever the GPU inventory read changes, and reports the latest
// results. A GPU that fails the check is unhealthy: workloads do not get
// it. The service does not re-measure or re-describe a changed
// inventory: its report keeps the one measured at start.
package gpus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
)

// Source reads GPUs; *gpu.Monitor is the real one.
type Source interface {
	Inventory() ([]gpu.GPU, error)
	Health() ([]gpu.Health, error)
	WatchXids(ctx context.Context) error
}

// Benchmarker is a Source that can also run the GPU check on every GPU
// (*gpupipe.Client). A Source that is not one is never benchmarked.
type Benchmarker interface {
	Benchmark(ctx context.Context) ([]gpucheck.Result, error)
}

// CDIFile is the name of the CDI specification the service writes.
const CDIFile = "rigos-nvidia-gpu.json"

// InventoryInterval is how often a service that benchmarks reads the
// inventory again, to benchmark again when it changed.
const InventoryInterval = time.Minute

// Service is a started GPU service.
type Service struct {
	src    Source
	bench  Benchmarker // nil when src cannot benchmark
	inv    []gpu.GPU
	digest string
	log    *slog.Logger
	now    func() time.Time

	// busy is write-held while src benchmarks: the GPU helper answers
	// nothing else meanwhile, so reports use the last health reading
	// rather than wait.
	busy sync.RWMutex

	mu         sync.Mutex
	healthy    map[int]bool
	health     []gpu.Health // the last reading, when bench is set
	healthErr  error
	benchmarks []*apiv1.GPUBenchmark // the latest benchmark's
	benchErr   string
	// checked is set once the first benchmark has ended: until then a
	// source that benchmarks hands out no GPU, so no workload gets one
	// before it has shown it computes correctly.
	checked bool

	// benchmarked gets a value after each benchmark (when ReportTo is
	// not busy), so the results go out at once.
	benchmarked chan struct{}
}

// Start reads the inventory, measures it with record, writes the CDI
// specification into cdiDir and starts watching Xid errors until ctx
// ends. The specification mounts the user-space driver in nvidiaDir
// (layout.InSystem(layout.NvidiaDir) in the agent) into GPU containers;
// without one there, it gives them the device nodes only, and Start
// logs a warning.
//
// When src is a Benchmarker, Start also benchmarks the GPUs in the
// background, at once and whenever the inventory read every
// InventoryInterval changes, until ctx ends; Start does not wait for it.
func Start(ctx context.Context, src Source, record func(kind string, data []byte) error, cdiDir, nvidiaDir string, log *slog.Logger) (*Service, error) {
	s, err := start(ctx, src, record, cdiDir, nvidiaDir, log, time.Now)
	if err != nil || s.bench == nil {
		return s, err
	}
	t := time.NewTicker(InventoryInterval)
	go func() {
		defer t.Stop()
		s.watchHardware(ctx, t.C)
	}()
	return s, nil
}

// start is Start without the benchmarks, which watchHardware runs.
func start(ctx context.Context, src Source, record func(kind string, data []byte) error, cdiDir, nvidiaDir string, log *slog.Logger, now func() time.Time) (*Service, error) {
	inv, err := src.Inventory()
	if err != nil {
		return nil, fmt.Errorf("reading the GPU inventory: %w", err)
	}
	s := &Service{src: src, inv: inv, digest: hex.EncodeToString(gpu.Digest(inv)), log: log, now: now, healthy: map[int]bool{},
		benchmarked: make(chan struct{}, 1)}
	if b, ok := src.(Benchmarker); ok {
		s.bench = b
		// A first reading for the reports made while the first
		// benchmark runs.
		s.health, s.healthErr = src.Health()
	}
	for _, g := range inv {
		s.healthy[g.Index] = true
	}
	if err := record(measure.KindGPU, measure.GPUInventory{Count: len(inv), Digest: s.digest}.Encode()); err != nil {
		return nil, fmt.Errorf("measuring the GPU inventory: %w", err)
	}
	user, err := gpu.FindUserSpace(nvidiaDir)
	switch {
	case errors.Is(err, gpu.ErrNoUserSpace):
		log.Warn("GPU containers get device nodes only: CUDA will not start in them", "err", err)
	case err != nil:
		return nil, fmt.Errorf("reading the NVIDIA user-space driver: %w", err)
	}
	if len(user.Skipped) > 0 {
		log.Info("NVIDIA user-space driver: files not mounted into containers", "files", user.Skipped)
	}
	spec, err := gpu.CDI(inv, user)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cdiDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cdiDir, CDIFile), spec, 0o644); err != nil {
		return nil, fmt.Errorf("writing the CDI specification: %w", err)
	}
	go func() {
		if err := src.WatchXids(ctx); err != nil {
			log.Error("watching GPU Xid errors", "err", err)
		}
	}()
	log.Info("GPUs", "count", len(inv), "inventory_digest", s.digest, "cdi_libraries", len(user.Libraries))
	return s, nil
}

// Count is the number of GPUs.
func (s *Service) Count() int { return len(s.inv) }

// Healthy reports whether GPU index was healthy at the last report.
func (s *Service) Healthy(index int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthy[index] && (s.bench == nil || s.checked)
}

// Report reads health and returns the report for the verifier. While
// the source benchmarks, it reports the last health reading instead.
func (s *Service) Report(now time.Time) *apiv1.AgentMessage {
	r := &apiv1.GPUReport{InventoryDigest: s.digest, UnixMs: now.UnixMilli()}
	health, err := s.readHealth()
	if err != nil {
		r.Error = err.Error()
	}
	byUUID := map[string]gpu.Health{}
	for _, h := range health {
		byUUID[h.UUID] = h
	}
	s.mu.Lock()
	wrong := map[string]*apiv1.GPUBenchmark{}
	for _, b := range s.benchmarks {
		if !b.GetCorrect() {
			wrong[b.GetUuid()] = b
		}
	}
	r.Benchmarks, r.BenchmarkError = s.benchmarks, s.benchErr
	for _, g := range s.inv {
		h, ok := byUUID[g.UUID]
		p := &apiv1.GPU{
			Index: uint32(g.Index), Uuid: g.UUID, Name: g.Name, MemoryBytes: g.MemoryBytes, DriverVersion: g.Driver,
			VbiosVersion: g.VBIOS, PciBusId: g.PCIBusID,
		}
		if ok {
			p.TemperatureC, p.PowerW, p.PowerLimitW = h.TemperatureC, h.PowerW, h.PowerLimitW
			p.GpuUtilPercent, p.MemUtilPercent, p.EccUncorrected = h.GPUUtilPercent, h.MemUtilPercent, h.ECCUncorrected
			p.ThrottleReasons, p.Xids, p.Healthy, p.Problems = h.ThrottleReasons, h.Xids, h.Healthy, h.Problems
		} else {
			p.Problems = []string{"no health reading"}
		}
		if b, ok := wrong[g.UUID]; ok {
			p.Healthy = false
			p.Problems = append(p.Problems, benchmarkProblem(b.GetProblem()))
		}
		if s.healthy[g.Index] && !p.Healthy {
			s.log.Warn("GPU unhealthy", "index", g.Index, "uuid", g.UUID, "problems", p.Problems)
		}
		s.healthy[g.Index] = p.Healthy
		r.Gpus = append(r.Gpus, p)
	}
	s.mu.Unlock()
	return &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_GpuReport{GpuReport: r}}
}

// readHealth reads the GPUs' health from the source, or, while the
// source benchmarks, returns the last reading.
func (s *Service) readHealth() ([]gpu.Health, error) {
	if s.bench == nil {
		return s.src.Health()
	}
	if !s.busy.TryRLock() {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.health, s.healthErr
	}
	h, err := s.src.Health()
	s.busy.RUnlock()
	s.mu.Lock()
	s.health, s.healthErr = h, err
	s.mu.Unlock()
	return h, err
}

// watchHardware benchmarks the GPUs, then reads the inventory at each
// tick and benchmarks again when its digest changed, until ctx ends.
func (s *Service) watchHardware(ctx context.Context, tick <-chan time.Time) {
	digest := s.digest
	s.benchmark(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		inv, err := s.src.Inventory()
		if err != nil {
			s.log.Warn("reading the GPU inventory again", "err", err)
			continue
		}
		if d := hex.EncodeToString(gpu.Digest(inv)); d != digest {
			s.log.Warn("GPU inventory changed since the last benchmark: benchmarking again", "was", digest, "now", d, "count", len(inv))
			digest = d
			s.benchmark(ctx)
		}
	}
}

// benchmark runs the GPU check and keeps its results; a GPU that failed
// it is unhealthy from then on, until a later benchmark passes it.
func (s *Service) benchmark(ctx context.Context) {
	s.log.Info("benchmarking GPUs")
	s.busy.Lock()
	rs, err := s.bench.Benchmark(ctx)
	s.busy.Unlock()
	if ctx.Err() != nil {
		return
	}
	at := s.now().UnixMilli()
	var out []*apiv1.GPUBenchmark
	for _, r := range rs {
		out = append(out, &apiv1.GPUBenchmark{Uuid: r.UUID, Correct: r.Correct, Problem: r.Problem,
			BandwidthGbps: r.BandwidthGBps, Fp32Tflops: r.FP32TFLOPS, UnixMs: at})
		if r.Correct {
			s.log.Info("GPU benchmark", "index", r.Index, "uuid", r.UUID, "bandwidth_gbps", r.BandwidthGBps, "fp32_tflops", r.FP32TFLOPS)
		} else {
			s.log.Error("GPU failed its benchmark: it takes no workloads", "index", r.Index, "uuid", r.UUID, "problem", r.Problem)
		}
	}
	defer func() {
		select {
		case s.benchmarked <- struct{}{}:
		default:
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.benchmarks, s.benchErr, s.checked = out, "", true
	if err != nil {
		s.benchErr = err.Error()
		s.log.Error("benchmarking GPUs", "err", err)
	}
	for _, r := range rs {
		if r.Correct {
			continue
		}
		for _, g := range s.inv {
			if g.UUID == r.UUID {
				s.healthy[g.Index] = false
			}
		}
	}
}

// benchmarkProblem is the health problem a failed benchmark makes.
func benchmarkProblem(problem string) string {
	if strings.Contains(problem, "computed wrongly") {
		return "benchmark: wrong result: " + problem
	}
	return "benchmark: failed: " + problem
}

// ReportInterval is how often GPU health goes to the verifier.
const ReportInterval = 30 * time.Second

// ReportTo sends the service's report to out each time a session
// attaches, every interval (ReportInterval in the agent) and after each
// benchmark until ctx ends. Reports are not kept while no session is attached: the next one
// replaces them.
func (s *Service) ReportTo(ctx context.Context, out *session.Outbox, every time.Duration) {
	report := func() { out.Send(s.Report(time.Now())) }
	out.OnAttach(report)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				report()
			case <-s.benchmarked:
				report()
			}
		}
	}()
}
