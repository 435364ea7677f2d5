// Package gpu reads a rig's NVIDIA GPUs through NVML: the inventory the
// verifier pins (a swapped GPU changes its digest), health (temperature,
// power, utilisation, ECC errors, throttling, Xid errors), and the CDI
// specification containerd uses to give GPUs to containers: their device
// nodes and the user-space driver (libcuda and its siblings, nvidia-smi)
// the image carries.
//
// NVML needs cgo (it is loaded with dlopen); without cgo, Open reports
// ErrNoDriver. Tests use go-nvml's dgxh100 fake; TestRealDriver runs the
// same code against a real driver where one is installed.
package gpu

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// ErrNoDriver is returned when NVML (the NVIDIA driver) is not present.
var ErrNoDriver = errors.New("no NVIDIA driver (NVML) on this machine")

// GPU is one GPU's identity.
type GPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Driver      string `json:"driver"`
	VBIOS       string `json:"vbios"`
	PCIBusID    string `json:"pci_bus_id"`
	Minor       int    `json:"minor"`
}

// Health is one GPU's condition.
type Health struct {
	UUID            string   `json:"uuid"`
	TemperatureC    uint32   `json:"temperature_c"`
	PowerW          float64  `json:"power_w"`
	PowerLimitW     float64  `json:"power_limit_w"`
	GPUUtilPercent  uint32   `json:"gpu_util_percent"`
	MemUtilPercent  uint32   `json:"mem_util_percent"`
	ECCUncorrected  uint64   `json:"ecc_uncorrected"`
	ThrottleReasons uint64   `json:"throttle_reasons"`
	Xids            []uint64 `json:"xids,omitempty"`
	Healthy         bool     `json:"healthy"`
	Problems        []string `json:"problems,omitempty"`
}

// Limits decide when a GPU is unhealthy.
type Limits struct {
	// MaxTemperatureC is the hottest acceptable temperature. Default is 90.
	MaxTemperatureC uint32
	// FatalXids are Xid errors that make a GPU unhealthy until reset.
	// Default is DefaultFatalXids.
	FatalXids []uint64
}

// DefaultFatalXids are the Xid errors NVIDIA documents as needing a GPU
// reset or replacement: 48 (double-bit ECC), 63/64 (row remapping), 74
// (NVLink), 79 (fell off the bus), 92/94/95 (ECC, contained and not),
// 119/120 (GSP).
var DefaultFatalXids = []uint64{48, 63, 64, 74, 79, 92, 94, 95, 119, 120}

func (l Limits) withDefaults() Limits {
	if l.MaxTemperatureC == 0 {
		l.MaxTemperatureC = 90
	}
	if l.FatalXids == nil {
		l.FatalXids = DefaultFatalXids
	}
	return l
}

// Evaluate sets Healthy and Problems from the readings.
func (h *Health) Evaluate(l Limits) {
	l = l.withDefaults()
	h.Problems = nil
	if h.TemperatureC > l.MaxTemperatureC {
		h.Problems = append(h.Problems, fmt.Sprintf("temperature %d °C above %d °C", h.TemperatureC, l.MaxTemperatureC))
	}
	if h.ECCUncorrected > 0 {
		h.Problems = append(h.Problems, fmt.Sprintf("%d uncorrected ECC errors", h.ECCUncorrected))
	}
	for _, x := range h.Xids {
		if slices.Contains(l.FatalXids, x) {
			h.Problems = append(h.Problems, fmt.Sprintf("Xid %d", x))
		}
	}
	h.Healthy = len(h.Problems) == 0
}

// Digest is the SHA-256 of the inventory in canonical form (sorted by
// UUID). Extended into the runtime PCR, it makes a swapped, added or
// removed GPU visible to the verifier.
func Digest(gpus []GPU) []byte {
	c := slices.Clone(gpus)
	sort.Slice(c, func(i, j int) bool { return c[i].UUID < c[j].UUID })
	b, _ := json.Marshal(c) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return sum[:]
}
