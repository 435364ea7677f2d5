package testvm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/ociarchive"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/imager"
)

// TestGPUWorkload runs the GPU path from the agent to a container on a
// VM, which has no NVIDIA GPU: the image's GPU helper reports go-nvml's
// DGX H100 fake and makes its device nodes (imager.Options.FakeGPUs);
// everything else is the GPU image's own (the agent's CDI specification,
// the NVIDIA user space on the system partition, containerd, runc). A
// container given a GPU by CDI name sees that GPU's device node and no
// other tenant's, and the driver's libraries read-only where CUDA looks;
// the GPU check image loads that libcuda on its own glibc and reports
// that the driver is not there, as it must without a GPU.
func TestGPUWorkload(t *testing.T) {
	setup(t)
	img, err := buildImage("fakegpu", env.keys, nil, nil, func(o *imager.Options) { o.FakeGPUs = true })
	if err != nil {
		t.Fatal(err)
	}
	workload := filepath.Join(env.work, "workload.tar")
	if err := ociarchive.WriteWorkload(workload, ociarchive.WorkloadName); err != nil {
		t.Fatal(err)
	}
	check := filepath.Join(t.TempDir(), "gpucheck.tar")
	if err := ociarchive.WriteGPUCheck(check, "rigos.test/gpucheck:1"); err != nil {
		t.Fatal(err)
	}
	archives := map[string][]byte{}
	for name, p := range map[string]string{"workload": workload, "gpucheck": check} {
		if archives[name], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}

	vm := startVM(t, Options{Image: img.QCOW2, Vars: env.vars, Dir: t.TempDir(), Memory: "512M", Timeout: 10 * time.Minute})
	v := startVerifier(t, img.Manifest)
	node := awaitTrusted(t, v, vm, "").GetNodeId()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The GPUs reach the verifier, and their first benchmark ends (until
	// it does, the node hands out no GPU). The benchmark runs the GPU
	// check on the image's libcuda, which finds no driver.
	var report *apiv1.GPUReport
	for deadline := time.Now().Add(4 * time.Minute); ; {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
		if err != nil {
			t.Fatal(err)
		}
		report = d.GetGpus()
		if len(report.GetGpus()) > 0 && (report.GetBenchmarkError() != "" || len(report.GetBenchmarks()) > 0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no benchmarked GPU report within 4 minutes: %v", report)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Second): // polling the verifier, bounded by the deadline
		}
	}
	if n := len(report.GetGpus()); n != 8 || !strings.Contains(report.GetGpus()[0].GetName(), "H100") {
		t.Errorf("GPU report: %d GPUs (%v), want the fake DGX's eight H100s", n, report.GetGpus())
	}
	t.Logf("GPU benchmark on the image's libcuda without a driver: %q", report.GetBenchmarkError())

	spec := func(id string, args ...string) *apiv1.WorkloadSpec {
		return &apiv1.WorkloadSpec{Id: id, ImageArchive: true, Args: args, TrustedTier: true,
			Resources: &apiv1.Resources{Cpus: 0.5, MemoryBytes: 64 << 20, Gpus: 1}}
	}
	// One tenant holds GPU 0 ...
	_, ticking := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("holder", "/workload", "sleep"), ImageArchive: archives["workload"]},
		func(out string) bool { return strings.Contains(out, "tick") })
	// ... so another, given one GPU, gets GPU 1: its node alone, the
	// driver's shared nodes, and the user space, none of it writable.
	r, _ := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("cuda", "/workload", "gpu"), ImageArchive: archives["workload"]}, nil)
	if r.err != nil || r.last().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || r.last().GetExitCode() != 0 {
		t.Fatalf("gpu workload: %v, events %v, output %q", r.err, r.events, r.stdout.String())
	}
	var devs []string
	for _, m := range regexp.MustCompile(`(?m)^gpu dev (.*)$`).FindAllStringSubmatch(r.stdout.String(), -1) {
		devs = append(devs, m[1])
	}
	slices.Sort(devs)
	// gpuhelper/fakegpu.go: the fake's nodes are 195:N, nvidiactl
	// 195:255 and the UVM nodes 195:250 and 195:251.
	wantDevs := []string{"nvidia-uvm char 195:250", "nvidia-uvm-tools char 195:251", "nvidia1 char 195:1", "nvidiactl char 195:255"}
	if !slices.Equal(devs, wantDevs) {
		t.Errorf("device nodes in the container = %q, want %q (GPU 1's node, not GPU 0's, which another workload holds)", devs, wantDevs)
	}
	for _, f := range []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
		"/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1", "/usr/bin/nvidia-smi"} {
		if want := fmt.Sprintf("gpu file %s elf=true writable=false", f); !strings.Contains(r.stdout.String(), want) {
			t.Errorf("container output lacks %q:\n%s", want, r.stdout.String())
		}
	}
	if _, err := v.admin.StopWorkload(ctx, &apiv1.StopWorkloadRequest{NodeId: node, WorkloadId: "holder"}); err != nil {
		t.Fatal(err)
	}
	if h := <-ticking; h.last().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
		t.Errorf("holder: events %v; want killed by the stop", h.events)
	}

	// The GPU check image, which brings only its glibc: the dynamic
	// loader finds the CDI-mounted libcuda.so.1, and CUDA's cuInit then
	// finds no driver (exit 3). Had the library not been mounted, the
	// error would be the one naming libcuda.so.1 as not found.
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("gpucheck", "/gpucheck"), ImageArchive: archives["gpucheck"]}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || e.GetExitCode() != 3 ||
		!strings.Contains(r.stderr.String(), "cuInit") {
		t.Errorf("gpucheck: %v, events %v, stderr %q; want exit 3 from cuInit (libcuda loaded, no driver)", r.err, r.events, r.stderr.String())
	}
	t.Logf("gpucheck in a container: %s", strings.TrimSpace(r.stderr.String()))
}
