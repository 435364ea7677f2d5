//go:build cgo

package gpus

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gputest"
	"github.com/rigos/rigos/pkg/measure"
)

// The service on go-nvml's DGX H100 fake: measured inventory, CDI spec,
// health in the report, and an Xid turning a GPU unhealthy.
func TestServiceOnDGXH100(t *testing.T) {
	xid := make(chan uint64, 1)
	mon, err := gpu.Open(gputest.FakeDGX(xid), gpu.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	var measured []measure.Event
	record := func(kind string, data []byte) error {
		measured = append(measured, measure.NewEvent(uint64(len(measured)), kind, data))
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	s, err := Start(ctx, mon, record, dir, filepath.Join(t.TempDir(), "nvidia"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := mon.Inventory()
	inventories, err := measure.GPUInventories(measured)
	if err != nil || len(inventories) != 1 || inventories[0].Count != 8 || inventories[0].Digest != hex.EncodeToString(gpu.Digest(inv)) {
		t.Fatalf("measured %+v, %v; want 8 GPUs with the inventory digest", inventories, err)
	}
	var spec struct {
		Kind    string `json:"kind"`
		Devices []struct {
			Name string `json:"name"`
		} `json:"devices"`
	}
	b, err := os.ReadFile(filepath.Join(dir, CDIFile))
	if err != nil || json.Unmarshal(b, &spec) != nil || spec.Kind != "nvidia.com/gpu" || len(spec.Devices) != 16 {
		t.Fatalf("CDI spec %s: %v", b, err)
	}
	r := s.Report(time.Now()).GetGpuReport()
	if len(r.GetGpus()) != 8 || !r.GetGpus()[0].GetHealthy() || r.GetGpus()[0].GetName() == "" || r.GetInventoryDigest() != inventories[0].Digest {
		t.Fatalf("report %v", r)
	}
	xid <- 79
	deadline := time.Now().Add(time.Minute)
	for s.Healthy(0) {
		if time.Now().After(deadline) {
			t.Fatal("GPU 0 still healthy a minute after Xid 79")
		}
		r = s.Report(time.Now()).GetGpuReport()
	}
	if g := r.GetGpus()[0]; g.GetHealthy() || len(g.GetXids()) != 1 || g.GetXids()[0] != 79 {
		t.Errorf("GPU 0 after Xid 79: %v", g)
	}
	if !s.Healthy(1) {
		t.Error("GPU 1 became unhealthy")
	}
}
