package workload

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// GPUs are injected from the folder the GPU service writes (/run/cdi on
// RigOS), not the CDI library's defaults: a spec there reaches the
// container, and a device no spec names is an error that says where it
// looked.
func TestCDIDevicesFromOwnFolder(t *testing.T) {
	dir := t.TempDir()
	spec := `{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu",
	  "devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/null"}]}}],
	  "containerEdits":{"mounts":[{"hostPath":"/etc/hostname","containerPath":"/usr/lib/x86_64-linux-gnu/libcuda.so.1","options":["ro","bind"],"type":"bind"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "rigos-gpus.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &oci.Spec{Linux: &specs.Linux{}}
	if err := withCDIDevices(dir, "nvidia.com/gpu=0")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/null" {
		t.Fatalf("devices %+v, want /dev/null", s.Linux.Devices)
	}
	var mounted bool
	for _, m := range s.Mounts {
		mounted = mounted || m.Destination == "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
	}
	if !mounted {
		t.Fatalf("mounts %+v lack the library", s.Mounts)
	}
	err := withCDIDevices(dir, "nvidia.com/gpu=7")(context.Background(), nil, nil, &oci.Spec{Linux: &specs.Linux{}})
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("unknown GPU: %v, want an error naming %s", err, dir)
	}
}
