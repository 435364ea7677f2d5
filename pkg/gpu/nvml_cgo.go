//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Monitor reads GPUs through NVML.
type Monitor struct {
	lib    nvml.Interface
	limits Limits
	mu     sync.Mutex
	xids   map[string][]uint64
}

// Open initialises NVML (lib nil means the real library). When the
// driver is missing it returns ErrNoDriver and calls nothing else: after
// a failed Init any NVML call kills the process.
func Open(lib nvml.Interface, limits Limits) (*Monitor, error) {
	if lib == nil {
		lib = nvml.New()
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		switch ret {
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			return nil, ErrNoDriver
		case nvml.ERROR_DRIVER_NOT_LOADED:
			// The library loaded (and so did everything it links): only
			// the kernel driver is missing, as on a rig without NVIDIA GPUs.
			return nil, fmt.Errorf("NVML loaded, but the NVIDIA kernel driver is not: %w", ErrNoDriver)
		}
		return nil, fmt.Errorf("initialising NVML: %v", ret)
	}
	return &Monitor{lib: lib, limits: limits, xids: map[string][]uint64{}}, nil
}

// Close shuts NVML down.
func (m *Monitor) Close() error {
	if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("shutting NVML down: %v", ret)
	}
	return nil
}

func check(what string, ret nvml.Return) error {
	if ret != nvml.SUCCESS {
		return fmt.Errorf("%s: %v", what, ret)
	}
	return nil
}

func (m *Monitor) devices() ([]nvml.Device, error) {
	n, ret := m.lib.DeviceGetCount()
	if err := check("counting GPUs", ret); err != nil {
		return nil, err
	}
	out := make([]nvml.Device, n)
	for i := range out {
		if out[i], ret = m.lib.DeviceGetHandleByIndex(i); ret != nvml.SUCCESS {
			return nil, fmt.Errorf("GPU %d: %v", i, ret)
		}
	}
	return out, nil
}

// Inventory lists the GPUs.
func (m *Monitor) Inventory() ([]GPU, error) {
	devs, err := m.devices()
	if err != nil {
		return nil, err
	}
	driver, ret := m.lib.SystemGetDriverVersion()
	if err := check("reading the driver version", ret); err != nil {
		return nil, err
	}
	var out []GPU
	for i, d := range devs {
		g := GPU{Index: i, Driver: driver}
		var errs []error
		g.UUID, ret = d.GetUUID()
		errs = append(errs, check("UUID", ret))
		g.Name, ret = d.GetName()
		errs = append(errs, check("name", ret))
		mem, ret := d.GetMemoryInfo()
		errs = append(errs, check("memory", ret))
		g.MemoryBytes = mem.Total
		g.VBIOS, ret = d.GetVbiosVersion()
		errs = append(errs, check("VBIOS version", ret))
		pci, ret := d.GetPciInfo()
		errs = append(errs, check("PCI info", ret))
		g.PCIBusID = busID(pci)
		g.Minor, ret = d.GetMinorNumber()
		errs = append(errs, check("minor number", ret))
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		out = append(out, g)
	}
	return out, nil
}

// busID is the PCI address NVML reports, or the one its parts give.
func busID(p nvml.PciInfo) string {
	if s := cString(p.BusId[:]); s != "" {
		return s
	}
	if s := cString(p.BusIdLegacy[:]); s != "" {
		return s
	}
	return fmt.Sprintf("%08x:%02x:%02x.0", p.Domain, p.Bus, p.Device)
}

func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// Health reads every GPU's condition and evaluates it.
func (m *Monitor) Health() ([]Health, error) {
	devs, err := m.devices()
	if err != nil {
		return nil, err
	}
	var out []Health
	for i, d := range devs {
		var h Health
		var errs []error
		var ret nvml.Return
		h.UUID, ret = d.GetUUID()
		errs = append(errs, check("UUID", ret))
		h.TemperatureC, ret = d.GetTemperature(nvml.TEMPERATURE_GPU)
		errs = append(errs, check("temperature", ret))
		mw, ret := d.GetPowerUsage()
		errs = append(errs, check("power", ret))
		lim, ret := d.GetEnforcedPowerLimit()
		errs = append(errs, check("power limit", ret))
		h.PowerW, h.PowerLimitW = float64(mw)/1000, float64(lim)/1000
		u, ret := d.GetUtilizationRates()
		errs = append(errs, check("utilisation", ret))
		h.GPUUtilPercent, h.MemUtilPercent = u.Gpu, u.Memory
		h.ThrottleReasons, ret = d.GetCurrentClocksEventReasons()
		errs = append(errs, check("throttle reasons", ret))
		ecc, ret := d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
		if ret != nvml.ERROR_NOT_SUPPORTED { // consumer GPUs have no ECC
			errs = append(errs, check("ECC errors", ret))
			h.ECCUncorrected = ecc
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		m.mu.Lock()
		h.Xids = append([]uint64(nil), m.xids[h.UUID]...)
		m.mu.Unlock()
		h.Evaluate(m.limits)
		out = append(out, h)
	}
	return out, nil
}

// WatchXids records Xid errors (from an NVML event set) until ctx ends.
// Health then reports them.
func (m *Monitor) WatchXids(ctx context.Context) error {
	set, ret := m.lib.EventSetCreate()
	if err := check("creating an event set", ret); err != nil {
		return err
	}
	defer set.Free()
	devs, err := m.devices()
	if err != nil {
		return err
	}
	for i, d := range devs {
		if err := check(fmt.Sprintf("GPU %d: registering for Xid events", i), d.RegisterEvents(nvml.EventTypeXidCriticalError, set)); err != nil {
			return err
		}
	}
	for ctx.Err() == nil {
		ev, ret := set.Wait(500) // milliseconds
		switch {
		case ret == nvml.ERROR_TIMEOUT:
			continue
		case ret != nvml.SUCCESS:
			return fmt.Errorf("waiting for GPU events: %v", ret)
		}
		if ev.EventType != nvml.EventTypeXidCriticalError || ev.Device == nil {
			continue
		}
		uuid, ret := ev.Device.GetUUID()
		if ret != nvml.SUCCESS {
			continue
		}
		m.mu.Lock()
		m.xids[uuid] = append(m.xids[uuid], ev.EventData)
		m.mu.Unlock()
	}
	return nil
}
