package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// runWorkload is "attest run": it starts a workload on a node, prints
// its events and output, and exits with the workload's exit code.
func runWorkload(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	node := fs.String("node", "", "node ID (required)")
	id := fs.String("id", "", "workload ID (required)")
	archive := fs.String("archive", "", "OCI image archive (tar) to send to the node")
	image := fs.String("image", "", "image: registry reference to pull, or the image's name in -archive")
	user := fs.String("registry-user", "", "registry user name (pulls)")
	plainHTTP := fs.Bool("plain-http", false, "registry without TLS (pulls)")
	trusted := fs.Bool("trusted", true, "trusted tier: runs only while the node is trusted, killed on demotion")
	cpus := fs.Float64("cpus", 0, "CPU quota in cores (fractions allowed)")
	memory := fs.String("memory", "", "memory limit (e.g. 512M, 2G)")
	pids := fs.Int64("pids", 0, "process limit (0: 1024)")
	scratch := fs.String("scratch", "", "scratch space the workload needs (e.g. 1G)")
	gpus := fs.Uint("gpus", 0, "number of GPUs")
	maxDur := fs.Duration("max-duration", 0, "stop the workload after this long (0: the node's plan)")
	outbound := fs.Bool("outbound", false, "let the workload open connections out (masqueraded)")
	readOnly := fs.Bool("read-only", false, "mount the image read-only (the workload writes to /scratch)")
	var env, ports multiFlag
	fs.Var(&env, "env", "KEY=VALUE (repeatable)")
	fs.Var(&ports, "port", "TCP port of the rig forwarded to the same port of the workload (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" || *id == "" {
		return errors.New("run: -node and -id are required")
	}
	mem, err := parseBytes(*memory)
	if err != nil {
		return fmt.Errorf("-memory: %w", err)
	}
	scr, err := parseBytes(*scratch)
	if err != nil {
		return fmt.Errorf("-scratch: %w", err)
	}
	var portNums []uint32
	for _, p := range ports {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return fmt.Errorf("-port %q: want a number %d-%d", p, apiv1.MinPort, apiv1.MaxPort)
		}
		portNums = append(portNums, uint32(n))
	}
	spec := &apiv1.WorkloadSpec{
		Network: &apiv1.NetworkPolicy{Outbound: *outbound, Ports: portNums},
		Id:      *id, Image: *image, ImageArchive: *archive != "", Args: fs.Args(), Env: env, TrustedTier: *trusted, ReadOnlyRootfs: *readOnly,
		Resources:     &apiv1.Resources{Cpus: *cpus, MemoryBytes: mem, Pids: *pids, ScratchBytes: scr, Gpus: uint32(*gpus)},
		MaxDurationMs: maxDur.Milliseconds(),
	}
	if *user != "" || *plainHTTP {
		// The password comes from the environment, never the command line.
		spec.RegistryAuth = &apiv1.RegistryAuth{Username: *user, Password: os.Getenv("RIGOS_REGISTRY_PASSWORD"), PlainHttp: *plainHTTP}
	}
	req := &apiv1.RunWorkloadRequest{NodeId: *node, Spec: spec}
	if *archive != "" {
		if req.ImageArchive, err = os.ReadFile(*archive); err != nil {
			return err
		}
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	s, err := c.RunWorkload(ctx, req)
	if err != nil {
		return err
	}
	for {
		u, err := s.Recv()
		if err != nil {
			return err
		}
		if l := u.GetLog(); l != nil {
			out := os.Stdout
			if l.GetStderr() {
				out = os.Stderr
			}
			out.Write(l.GetData())
			continue
		}
		e := u.GetEvent()
		fmt.Fprintf(os.Stderr, "%s  workload %s %s%s\n", when(e.GetUnixMs()), e.GetId(), e.GetState().Name(), eventDetail(e))
		switch e.GetState() {
		case apiv1.WorkloadState_WORKLOAD_STATE_EXITED:
			if e.GetExitCode() != 0 {
				os.Exit(int(min(e.GetExitCode(), 125)))
			}
			return nil
		case apiv1.WorkloadState_WORKLOAD_STATE_KILLED, apiv1.WorkloadState_WORKLOAD_STATE_FAILED:
			return fmt.Errorf("workload %s %s: %s", e.GetId(), e.GetState().Name(), e.GetReason())
		}
	}
}

func stopWorkload(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	node := fs.String("node", "", "node ID (required)")
	id := fs.String("id", "", "workload ID (required)")
	reason := fs.String("reason", "", "reason recorded with the stop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := apiv1.ValidWorkloadID(*id); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := c.StopWorkload(ctx, &apiv1.StopWorkloadRequest{NodeId: *node, WorkloadId: *id, Reason: *reason})
	if err != nil {
		return err
	}
	fmt.Printf("workload %s %s%s\n", e.GetId(), e.GetState().Name(), eventDetail(e))
	return nil
}

func eventDetail(e *apiv1.WorkloadEvent) string {
	var parts []string
	if e.GetImageDigest() != "" {
		parts = append(parts, "image "+e.GetImageDigest())
	}
	if e.GetState() == apiv1.WorkloadState_WORKLOAD_STATE_EXITED || e.GetState() == apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
		parts = append(parts, fmt.Sprintf("exit code %d", e.GetExitCode()))
	}
	if e.GetOomKilled() {
		parts = append(parts, "OOM-killed")
	}
	if e.GetReason() != "" {
		parts = append(parts, e.GetReason())
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, "; ")
}

// parseBytes reads sizes such as 512M or 2G (binary units); empty is 0.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q: want a size such as 512M or 2G", s)
	}
	return v * mult, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
