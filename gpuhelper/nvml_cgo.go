//go:build cgo && !rigos_fakegpu

package main

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/rigos/rigos/pkg/gpu"
)

// errNoCgo is nil: this build can load NVML.
var errNoCgo error

// openNVML loads the NVML library at path and initialises it.
func openNVML(path string) (*gpu.Monitor, error) {
	return gpu.Open(nvml.New(nvml.WithLibraryPath(path)), gpu.Limits{})
}
