//go:build cgo

package workload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/ociarchive"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/imager"
)

// GPUContainerEnv, set to 1, runs TestRealGPUContainer (hack/gpu-check.sh
// sets it on a machine with an NVIDIA driver and GPU).
const GPUContainerEnv = "RIGOS_GPU_CONTAINER"

// GPUContainerFormat is the gpucheck -f template TestRealGPUContainer
// prints each GPU's result with, after "gpucontainer: ": the same fields
// as hack/gpu-check.sh's step 2.
const GPUContainerFormat = `{{.Index}}|{{.Name}}|{{.UUID}}|{{printf "%.0f" .BandwidthGBps}}|{{printf "%.1f" .FP32TFLOPS}}|{{.Correct}}|{{.Problem}}`

// TestRealGPUContainer is step 3 of hack/gpu-check.sh, on a machine with
// an NVIDIA driver and GPU: RigOS's own containerd, runc shim and runc,
// built as the image builds them and configured as in the image, run the
// GPU check image (gpucheck and its glibc, nothing of the driver) in a
// workload container confined as on a node, given GPU 0 by CDI name. The
// CDI specification is the agent's (gpu.CDI), from this machine's NVML
// inventory and this machine's driver libraries, which must match its
// kernel driver, so the image's own are not used here. The check must
// compute correctly; its result lines are printed for the script.
func TestRealGPUContainer(t *testing.T) {
	if os.Getenv(GPUContainerEnv) != "1" {
		t.Skipf("needs an NVIDIA GPU and root: hack/gpu-check.sh runs it (%s=1)", GPUContainerEnv)
	}
	mon, err := gpu.Open(nil, gpu.Limits{})
	if err != nil {
		t.Fatalf("NVML: %v", err)
	}
	inv, err := mon.Inventory()
	mon.Close()
	if err != nil || len(inv) == 0 {
		t.Fatalf("NVML inventory: %d GPUs, %v", len(inv), err)
	}
	for _, n := range []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} {
		if _, err := os.Stat(n); err != nil {
			t.Fatalf("%v: load the driver's UVM module and make its nodes first (nvidia-modprobe -u -c=0, as root)", err)
		}
	}
	user, err := hostUserSpace(inv[0].Driver)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := gpu.CDI(inv, user)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cdiDir := filepath.Join(dir, "cdi")
	if err := os.Mkdir(cdiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cdiDir, "rigos-nvidia-gpu.json"), spec, 0o644); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := imager.BuildRuntime(root, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %v in %s", imager.RuntimePrograms, time.Since(start).Round(time.Second))
	sock := startContainerd(t, dir, bin, cdiDir)

	archive := filepath.Join(dir, "gpucheck.tar")
	if err := ociarchive.WriteGPUCheck(archive, "rigos.test/gpucheck:1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &Containerd{Socket: sock, CDIDir: cdiDir, CgroupRoot: "/sys/fs/cgroup"}
	ws := &apiv1.WorkloadSpec{Id: "gpucheck", ImageArchive: true, Args: []string{"/gpucheck", "-f", GPUContainerFormat},
		Resources: &apiv1.Resources{Gpus: 1, MemoryBytes: 2 << 30}}
	img, err := c.Prepare(ctx, ws, archive)
	if err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	exit, err := c.Run(ctx, RunRequest{Spec: ws, Image: img, Scratch: scratch, GPUs: []int{0},
		Stdout: func(b []byte) { stdout.Write(b) }, Stderr: func(b []byte) { stderr.Write(b) },
		Measure: func(string) error { return nil }, Started: func(func()) {}})
	if err != nil {
		t.Fatalf("running the GPU check in a container: %v (stderr %q)", err, stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		fmt.Println("gpucontainer:", l) // parsed by hack/gpu-check.sh
	}
	if exit.Code != 0 || stdout.Len() == 0 {
		t.Errorf("gpucheck in a container exited %d: stdout %q, stderr %q", exit.Code, stdout.String(), stderr.String())
	}
}

// hostUserSpace is this machine's NVIDIA user space at driver version
// version, for the CDI specification: the libraries a CUDA container
// needs by their real files, and nvidia-smi.
func hostUserSpace(version string) (gpu.UserSpace, error) {
	var u gpu.UserSpace
	dirs := []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib/x86_64-linux-gnu/nvidia/current"}
	for _, soname := range []string{"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"} {
		var found string
		for _, d := range dirs {
			if p, err := filepath.EvalSymlinks(filepath.Join(d, soname)); err == nil {
				found = p
				break
			}
		}
		if found == "" {
			return u, fmt.Errorf("%s not found in %v: is the NVIDIA driver's user space installed?", soname, dirs)
		}
		if !strings.HasSuffix(found, "."+version) {
			return u, fmt.Errorf("%s is %s, not the kernel driver's version %s: install the matching user space", soname, found, version)
		}
		u.Libraries = append(u.Libraries, gpu.Library{Path: found, Soname: soname})
	}
	if smi, err := exec.LookPath("nvidia-smi"); err == nil {
		if smi, err = filepath.EvalSymlinks(smi); err == nil {
			u.Executables = append(u.Executables, smi)
		}
	}
	return u, nil
}

// startContainerd starts the containerd in bin (its shim and runc on its
// PATH) with the image's configuration, its folders and sockets under
// dir and CDI specs from cdiDir, and returns its socket; it is killed
// when the test ends.
func startContainerd(t *testing.T, dir, bin, cdiDir string) string {
	t.Helper()
	p := imager.ContainerdPaths{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		Socket: filepath.Join(dir, "c.sock"), TTRPCSocket: filepath.Join(dir, "t.sock"), CDIDir: cdiDir}
	cfg := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(imager.ContainerdConfigAt(p)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "containerd"), "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd's log:\n%s", b)
		}
	})
	// Its socket appears once it serves.
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := os.Stat(p.Socket); err == nil {
			return p.Socket
		}
		select {
		case <-exited:
			t.Fatalf("containerd exited before serving: %v", waitErr) // its log follows
		case <-time.After(100 * time.Millisecond): // waiting for its socket, bounded by the deadline
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd's socket did not appear within a minute")
		}
	}
}
