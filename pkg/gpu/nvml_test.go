//go:build cgo

package gpu

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"

	"github.com/rigos/rigos/pkg/gpu/gputest"
)

func openFake(t *testing.T, xid chan uint64) *Monitor {
	t.Helper()
	m, err := Open(gputest.FakeDGX(xid), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestInventoryAndCDI(t *testing.T) {
	m := openFake(t, nil)
	inv, err := m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if len(inv) != 8 {
		t.Fatalf("Inventory() = %d GPUs, want the DGX's 8", len(inv))
	}
	g := inv[0]
	if !strings.Contains(g.Name, "H100") || g.MemoryBytes < 80<<30 || g.UUID == "" || g.PCIBusID == "" || g.VBIOS == "" || g.Driver == "" {
		t.Errorf("GPU 0 = %+v", g)
	}
	spec, err := CDI(inv, UserSpace{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind": "nvidia.com/gpu"`, `"name": "0"`, g.UUID, "/dev/nvidiactl"} {
		if !strings.Contains(string(spec), want) {
			t.Errorf("CDI spec lacks %s", want)
		}
	}
	// The digest ignores order but sees a swapped GPU.
	rev := slices.Clone(inv)
	slices.Reverse(rev)
	if string(Digest(rev)) != string(Digest(inv)) {
		t.Error("Digest depends on the order of the GPUs")
	}
	swapped := slices.Clone(inv)
	swapped[3].UUID = "GPU-someone-elses"
	if string(Digest(swapped)) == string(Digest(inv)) {
		t.Error("a swapped GPU does not change the digest")
	}
}

func TestXidMakesAGPUUnhealthy(t *testing.T) {
	xid := make(chan uint64, 1)
	m := openFake(t, xid)
	h, err := m.Health()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range h {
		if !g.Healthy || g.PowerW != 350 || g.GPUUtilPercent != 97 {
			t.Fatalf("fresh GPU = %+v, want healthy at 350 W and 97 %%", g)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.WatchXids(ctx) }()
	xid <- 79 // "GPU has fallen off the bus"
	deadline := time.Now().Add(time.Minute)
	for len(h[0].Xids) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the Xid event was not recorded within a minute")
		}
		if h, err = m.Health(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("WatchXids() = %v", err)
	}
	if h[0].Healthy || !slices.Contains(h[0].Problems, "Xid 79") {
		t.Fatalf("GPU 0 after Xid 79 = %+v, want unhealthy", h[0])
	}
	if !h[1].Healthy {
		t.Errorf("GPU 1 = %+v, want healthy", h[1])
	}
}

func TestInitFailureCallsNothingElse(t *testing.T) {
	s := dgxh100.New()
	var calls atomic.Int32
	s.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	s.ShutdownFunc = func() nvml.Return { calls.Add(1); return nvml.SUCCESS }
	s.DeviceGetCountFunc = func() (int, nvml.Return) { calls.Add(1); return 0, nvml.SUCCESS }
	if _, err := Open(s, Limits{}); !errors.Is(err, ErrNoDriver) {
		t.Fatalf("Open(no library) = %v, want ErrNoDriver", err)
	}
	if calls.Load() != 0 {
		t.Fatal("NVML was called after a failed Init (that kills the process on a machine without the driver)")
	}
}

// The same code against a real NVIDIA driver, where there is one.
func TestRealDriver(t *testing.T) {
	m, err := Open(nil, Limits{})
	if errors.Is(err, ErrNoDriver) {
		t.Skip("no NVIDIA driver on this machine")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inv, err := m.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	h, err := m.Health()
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range inv {
		t.Logf("GPU %d: %s %s %d MiB bus %s VBIOS %s driver %s; %d °C %.0f/%.0f W healthy %v %v",
			g.Index, g.Name, g.UUID, g.MemoryBytes>>20, g.PCIBusID, g.VBIOS, g.Driver,
			h[i].TemperatureC, h[i].PowerW, h[i].PowerLimitW, h[i].Healthy, h[i].Problems)
	}
}
