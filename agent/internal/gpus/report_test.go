package gpus

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/session"
)

// fakeSource is one healthy GPU, without NVML.
type fakeSource struct{}

var _ Source = fakeSource{}

func (fakeSource) Inventory() ([]gpu.GPU, error) {
	return []gpu.GPU{{Index: 0, UUID: "GPU-0", Name: "fake", Minor: 0}}, nil
}
func (fakeSource) Health() ([]gpu.Health, error) {
	return []gpu.Health{{UUID: "GPU-0", Healthy: true}}, nil
}
func (fakeSource) WatchXids(ctx context.Context) error { <-ctx.Done(); return nil }

// The service reports to the session's outbox on its own: a report on
// every session that attaches, none kept while detached.
func TestReportToOutbox(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, fakeSource{}, func(string, []byte) error { return nil }, t.TempDir(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := session.NewOutbox(nil)
	s.ReportTo(ctx, out, time.Hour)
	got := make(chan *apiv1.GPUReport, 4)
	send := func(m *apiv1.AgentMessage) error { got <- m.GetGpuReport(); return nil }
	for i := range 2 {
		out.Attach(send)
		select {
		case r := <-got:
			if len(r.GetGpus()) != 1 || !r.GetGpus()[0].GetHealthy() {
				t.Errorf("session %d: report %v, want one healthy GPU", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: no GPU report within 10s of attaching", i)
		}
		out.Attach(nil)
	}
	if n := out.Pending(); n != 0 {
		t.Errorf("outbox keeps %d GPU reports while detached, want none", n)
	}
}

// Without a user-space driver the service still starts, and containers
// get device nodes only; a folder that cannot be read stops it, rather
// than hand out GPUs CUDA cannot use.
func TestStartUserSpace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	record := func(string, []byte) error { return nil }
	cdiDir := t.TempDir()
	if _, err := Start(ctx, fakeSource{}, record, cdiDir, filepath.Join(t.TempDir(), "missing"), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("Start without a user-space driver: %v", err)
	}
	var spec struct {
		ContainerEdits struct {
			DeviceNodes []struct{ Path string } `json:"deviceNodes"`
			Mounts      []json.RawMessage       `json:"mounts"`
		} `json:"containerEdits"`
	}
	b, err := os.ReadFile(filepath.Join(cdiDir, CDIFile))
	if err != nil || json.Unmarshal(b, &spec) != nil || len(spec.ContainerEdits.DeviceNodes) != 3 || len(spec.ContainerEdits.Mounts) != 0 {
		t.Errorf("CDI spec without a user-space driver: %s, %v; want the 3 control devices and no mount", b, err)
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "lib"), []byte("a file, not a folder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, fakeSource{}, record, t.TempDir(), broken, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("Start with an unreadable user-space driver folder: no error")
	}
}
