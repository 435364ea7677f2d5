//go:build !cgo

package main

import (
	"errors"

	"github.com/rigos/rigos/pkg/gpu"
)

// errNoCgo: NVML is loaded with dlopen, which needs cgo.
var errNoCgo = errors.New("built without cgo: cannot load NVML")

func openNVML(string) (*gpu.Monitor, error) { return nil, errNoCgo }
