//go:build cgo && rigos_fakegpu

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gputest"
)

// This file is built only with the rigos_fakegpu tag, which the imager
// sets for test images alone (imager.Options.FakeGPUs): the helper then
// reports go-nvml's DGX H100 fake (eight H100s) instead of loading NVML,
// and makes device nodes for it, so a VM without an NVIDIA GPU can run
// the GPU path from the agent's CDI specification to a container. Such
// an image is a different build (this helper's digest differs), which a
// production verifier does not trust.

// errNoCgo is nil: this build needs cgo for the fake's NVML types.
var errNoCgo error

// fakeDevDir is where the fake's device nodes are made.
var fakeDevDir = "/dev"

// The fake device nodes. nvidiactl and nvidiaN have the NVIDIA driver's
// own major (195) and minors; the driver is not loaded, so opening one
// fails with ENXIO. nvidia-uvm's major is dynamic on a real rig; the
// fake gives both UVM nodes unused minors of 195, so no node aliases
// another driver's device.
const (
	nvidiaMajor    = 195
	nvidiactlMinor = 255
)

// openNVML ignores path: it opens the DGX H100 fake after making its
// device nodes. The fake's GPUs keep their UUIDs across helper restarts
// (the agent matches readings to its inventory by UUID, as real GPUs
// allow), and waiting for an Xid waits, as NVML does, rather than
// returning at once: a helper spinning on it starved the VM.
func openNVML(string) (*gpu.Monitor, error) {
	fake := gputest.FakeDGX(nil)
	for i, d := range fake.Devices {
		d.(*server.Device).UUID = fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i)
	}
	fake.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
			WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
				time.Sleep(time.Duration(ms) * time.Millisecond) // no Xid ever comes: NVML's wait times out
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			},
		}, nvml.SUCCESS
	}
	nodes := map[string]uint32{"nvidiactl": nvidiactlMinor, "nvidia-uvm": 250, "nvidia-uvm-tools": 251}
	for i := range fake.Devices {
		nodes[fmt.Sprintf("nvidia%d", i)] = uint32(i)
	}
	for name, minor := range nodes {
		p := filepath.Join(fakeDevDir, name)
		err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(nvidiaMajor, minor)))
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("making the fake GPUs' device node %s: %w", p, err)
		}
	}
	return gpu.Open(fake, gpu.Limits{})
}
