// Package gpus is the agent's GPU service: at start it reads the GPU
// inventory, measures its digest into the runtime PCR (so the verifier
// sees a swapped, added or removed GPU), writes the CDI specification
// containerd gives GPUs to containers with, and keeps watching Xid
// errors; it reports inventory and health to the verifier through the
// session's outbox, whether or not the node runs workloads.
package gpus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/session"
)

// Source reads GPUs; *gpu.Monitor is the real one.
type Source interface {
	Inventory() ([]gpu.GPU, error)
	Health() ([]gpu.Health, error)
	WatchXids(ctx context.Context) error
}

// CDIFile is the name of the CDI specification the service writes.
const CDIFile = "rigos-nvidia-gpu.json"

// Service is a started GPU service.
type Service struct {
	src    Source
	inv    []gpu.GPU
	digest string
	log    *slog.Logger

	mu      sync.Mutex
	healthy map[int]bool
}

// Start reads the inventory, measures it with record, writes the CDI
// specification into cdiDir and starts watching Xid errors until ctx
// ends. The specification mounts the user-space driver in nvidiaDir
// (layout.InSystem(layout.NvidiaDir) in the agent) into GPU containers;
// without one there, it gives them the device nodes only, and Start
// logs a warning.
func Start(ctx context.Context, src Source, record func(kind string, data []byte) error, cdiDir, nvidiaDir string, log *slog.Logger) (*Service, error) {
	inv, err := src.Inventory()
	if err != nil {
		return nil, fmt.Errorf("reading the GPU inventory: %w", err)
	}
	s := &Service{src: src, inv: inv, digest: hex.EncodeToString(gpu.Digest(inv)), log: log, healthy: map[int]bool{}}
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
	return s.healthy[index]
}

// Report reads health and returns the report for the verifier.
func (s *Service) Report(now time.Time) *apiv1.AgentMessage {
	r := &apiv1.GPUReport{InventoryDigest: s.digest, UnixMs: now.UnixMilli()}
	health, err := s.src.Health()
	if err != nil {
		r.Error = err.Error()
	}
	byUUID := map[string]gpu.Health{}
	for _, h := range health {
		byUUID[h.UUID] = h
	}
	s.mu.Lock()
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
		if s.healthy[g.Index] && !p.Healthy {
			s.log.Warn("GPU unhealthy", "index", g.Index, "uuid", g.UUID, "problems", p.Problems)
		}
		s.healthy[g.Index] = p.Healthy
		r.Gpus = append(r.Gpus, p)
	}
	s.mu.Unlock()
	return &apiv1.AgentMessage{Msg: &apiv1.AgentMessage_GpuReport{GpuReport: r}}
}

// ReportInterval is how often GPU health goes to the verifier.
const ReportInterval = 30 * time.Second

// ReportTo sends the service's report to out each time a session
// attaches and every interval (ReportInterval in the agent) until ctx
// ends. Reports are not kept while no session is attached: the next one
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
			}
		}
	}()
}
