//go:build cgo

package gpu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// The CDI specification for go-nvml's DGX H100 fake and a user-space
// driver folder: every device node a CUDA container opens, and each
// library mounted under its soname where the loader looks.
func TestCDIOnDGXH100(t *testing.T) {
	dir, _ := fakeUserSpace(t)
	inv, err := openFake(t, nil).Inventory()
	if err != nil {
		t.Fatal(err)
	}
	u, err := FindUserSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := CDI(inv, u)
	if err != nil {
		t.Fatal(err)
	}
	var spec cdiSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Version != "0.6.0" || spec.Kind != "nvidia.com/gpu" {
		t.Errorf("CDI spec version %q, kind %q; want 0.6.0, nvidia.com/gpu", spec.Version, spec.Kind)
	}
	nodes := func(e cdiEdits) (paths []string) {
		for _, n := range e.DeviceNodes {
			paths = append(paths, n.Path)
		}
		return paths
	}
	if got, want := nodes(spec.ContainerEdits), []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}; !slices.Equal(got, want) {
		t.Errorf("global device nodes = %v, want %v", got, want)
	}
	devices := map[string][]string{}
	for _, d := range spec.Devices {
		if len(d.ContainerEdits.Mounts) > 0 {
			t.Errorf("device %s has mounts of its own: %+v", d.Name, d.ContainerEdits.Mounts)
		}
		devices[d.Name] = nodes(d.ContainerEdits)
	}
	want := map[string][]string{}
	for i, g := range inv {
		node := []string{fmt.Sprintf("/dev/nvidia%d", i)}
		want[fmt.Sprint(i)], want[g.UUID] = node, node
	}
	if diff := cmp.Diff(want, devices); diff != "" {
		t.Errorf("devices' nodes (-want +got):\n%s", diff)
	}

	opts := []string{"ro", "nosuid", "nodev", "bind"}
	lib := func(file, soname string) cdiMount {
		return cdiMount{filepath.Join(dir, "lib", file), "/usr/lib/x86_64-linux-gnu/" + soname, opts, "bind"}
	}
	wantMounts := []cdiMount{
		{filepath.Join(dir, "bin", "nvidia-smi"), "/usr/bin/nvidia-smi", opts, "bind"},
		lib("libcuda.so.550.163.01", "libcuda.so.1"),
		lib("libcudadebugger.so.550.163.01", "libcudadebugger.so.1"),
		lib("libnvidia-gpucomp.so.550.163.01", "libnvidia-gpucomp.so.550.163.01"),
		lib("libnvidia-ml.so.550.163.01", "libnvidia-ml.so.1"),
		lib("libnvidia-nvvm.so.550.163.01", "libnvidia-nvvm.so.4"),
		lib("libnvidia-ptxjitcompiler.so.550.163.01", "libnvidia-ptxjitcompiler.so.1"),
	}
	if diff := cmp.Diff(wantMounts, spec.ContainerEdits.Mounts); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	again, err := CDI(inv, u)
	if err != nil || string(again) != string(b) {
		t.Errorf("CDI is not deterministic: %v", err)
	}
}

// containerd reads the specification with the CDI library: it loads
// without error, with or without a user-space driver, and its mounts
// become read-only bind mounts of the OCI spec (idmapped, as a workload
// runs in a user namespace).
func TestCDIValidates(t *testing.T) {
	dir, _ := fakeUserSpace(t)
	u, err := FindUserSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := openFake(t, nil).Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for name, user := range map[string]UserSpace{"with user space": u, "device nodes only": {}} {
		b, err := CDI(inv, user)
		if err != nil {
			t.Fatal(err)
		}
		specDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(specDir, "rigos-nvidia-gpu.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		cache, err := cdi.NewCache(cdi.WithSpecDirs(specDir), cdi.WithAutoRefresh(false))
		if err != nil {
			t.Fatalf("%s: cdi.NewCache: %v", name, err)
		}
		if errs := cache.GetErrors(); len(errs) > 0 {
			t.Fatalf("%s: the CDI library rejects the spec: %v\n%s", name, errs, b)
		}
		if got := len(cache.ListDevices()); got != 2*len(inv) {
			t.Errorf("%s: %d CDI devices, want %d", name, got, 2*len(inv))
		}
		dev := cache.GetDevice("nvidia.com/gpu=" + inv[3].UUID)
		if dev == nil {
			t.Fatalf("%s: no device nvidia.com/gpu=%s", name, inv[3].UUID)
		}

		// Inject the global mounts (not the device nodes, which the
		// library reads from this machine's /dev).
		edits := dev.GetSpec().ContainerEdits
		edits.DeviceNodes = nil
		s := &oci.Spec{Linux: &oci.Linux{Namespaces: []oci.LinuxNamespace{{Type: oci.UserNamespace}}}}
		if err := (&cdi.ContainerEdits{ContainerEdits: &edits}).Apply(s); err != nil {
			t.Fatalf("%s: applying the mounts: %v", name, err)
		}
		if len(s.Mounts) != len(user.Libraries)+len(user.Executables) {
			t.Errorf("%s: %d OCI mounts, want %d", name, len(s.Mounts), len(user.Libraries)+len(user.Executables))
		}
		for _, m := range s.Mounts {
			if want := []string{"ro", "nosuid", "nodev", "bind", "idmap"}; m.Type != "bind" || !slices.Equal(m.Options, want) {
				t.Errorf("%s: OCI mount %+v, want type bind, options %v", name, m, want)
			}
		}
	}
}
