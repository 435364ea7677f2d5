package testvm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/ociarchive"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/layout"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runResult is what RunWorkload streamed back.
type runResult struct {
	events  []*apiv1.WorkloadEvent
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	err     error
	running time.Duration // from the request to the running event
}

func (r *runResult) last() *apiv1.WorkloadEvent {
	if len(r.events) == 0 {
		return nil
	}
	return r.events[len(r.events)-1]
}

// runWorkload runs a workload to its end (or until onOutput returns
// true, after which it keeps reading in the background into done).
func runWorkload(ctx context.Context, v *verifier, req *apiv1.RunWorkloadRequest, onOutput func(string) bool) (*runResult, <-chan *runResult) {
	res := &runResult{}
	done := make(chan *runResult, 1)
	start := time.Now()
	s, err := v.admin.RunWorkload(ctx, req)
	if err != nil {
		res.err = err
		done <- res
		return res, done
	}
	early := make(chan struct{})
	go func() {
		defer close(done)
		signalled := false
		for {
			u, err := s.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					res.err = err
				}
				if !signalled {
					close(early)
				}
				done <- res
				return
			}
			if e := u.GetEvent(); e != nil {
				if e.GetState() == apiv1.WorkloadState_WORKLOAD_STATE_RUNNING {
					res.running = time.Since(start)
				}
				res.events = append(res.events, e)
			}
			if l := u.GetLog(); l != nil && l.GetStderr() {
				res.stderr.Write(l.GetData())
			}
			if l := u.GetLog(); l != nil && !l.GetStderr() {
				res.stdout.Write(l.GetData())
				if !signalled && onOutput != nil && onOutput(res.stdout.String()) {
					signalled = true
					close(early)
				}
			}
		}
	}()
	if onOutput == nil {
		return <-done, nil
	}
	<-early
	return res, done
}

// TestWorkloads runs containers on an attested VM through the verifier:
// output comes back through the stream, the runtime log names the
// workloads, limits hold, plan violations are refused by name, a
// revocation kills the trusted-tier workload, the owner's offline view of
// the disk holds no plaintext, and a reboot of the same image unlocks the
// state with containerd's images still there.
func TestWorkloads(t *testing.T) {
	setup(t)
	img, err := buildImage("genuine", env.keys, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	archivePath := filepath.Join(env.work, "workload.tar")
	if err := ociarchive.WriteWorkload(archivePath, ociarchive.WorkloadName); err != nil {
		t.Fatal(err)
	}
	archive, err := os.ReadFile(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, err := ociarchive.ManifestDigest(archive)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fwd, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the published workload port
	if err != nil {
		t.Fatal(err)
	}
	fwdPort := fwd.Addr().(*net.TCPAddr).Port
	fwd.Close()
	o := Options{Image: img.QCOW2, Vars: env.vars, Dir: dir, Memory: "512M", Timeout: 15 * time.Minute, Reuse: true,
		Forward: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:9090", fwdPort)}}
	vm := startVM(t, o)
	v := startVerifier(t, img.Manifest)
	node := awaitTrusted(t, v, vm, "").GetNodeId()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The supplier's ASK plan on the stick's ESP reached the verifier.
	if d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node}); err != nil ||
		!strings.Contains(d.GetAskPlan(), `"memory_mb":320`) || d.GetAskPlanError() != "" {
		t.Errorf("ASK plan at the verifier: %q (error %q), %v", d.GetAskPlan(), d.GetAskPlanError(), err)
	}
	spec := func(id string, args ...string) *apiv1.WorkloadSpec {
		return &apiv1.WorkloadSpec{Id: id, ImageArchive: true, Args: append([]string{"/workload"}, args...), TrustedTier: true,
			Resources: &apiv1.Resources{Cpus: 0.5, MemoryBytes: 64 << 20}}
	}

	// A container from an archive sent down the stream; its output comes back.
	r, _ := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("hello", "hello"), ImageArchive: archive}, nil)
	if r.err != nil || r.last().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || r.last().GetExitCode() != 0 {
		t.Fatalf("hello: %v, events %v", r.err, r.events)
	}
	// Its root is an unprivileged range of node IDs of its own (a user
	// namespace), not the node's root.
	for _, want := range []string{"hello from a RigOS workload", "memory.max 67108864", "Seccomp: 2", "NoNewPrivs: 1",
		"uid_map 0 1048576 65536"} { // agent/internal/workload: FirstWorkloadID, IDsPerWorkload
		if !strings.Contains(r.stdout.String(), want) {
			t.Errorf("hello output = %q, want %q (the greeting, its 64 MiB limit, a seccomp filter, no new privileges, its own user namespace)", r.stdout.String(), want)
		}
	}
	if got := r.last().GetImageDigest(); got != wantDigest {
		t.Errorf("image digest = %s, want %s", got, wantDigest)
	}
	t.Logf("hello: running %s after the request (image sent and imported)", r.running.Round(time.Millisecond))

	// A read-only image: writing to / fails (the marker workload exits 1
	// at its first write); the same workload with a writable image runs
	// further below ("secret").
	ro := spec("readonly", "marker", "x")
	ro.ReadOnlyRootfs = true
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: ro, ImageArchive: archive}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || e.GetExitCode() != 1 {
		t.Errorf("read-only image: %v, events %v; want exited 1 (no write to /)", r.err, r.events)
	}

	// The pull path. Credentials never go over plain HTTP (the test
	// registry has no TLS): a spec asking for it is refused by name.
	reg, err := ociarchive.NewRegistry(archive, "rigos/pulled", "1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: reg}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	ref := fmt.Sprintf("10.0.2.2:%d/rigos/pulled:1", lis.Addr().(*net.TCPAddr).Port)
	pulled := &apiv1.WorkloadSpec{Id: "pulled", Image: ref, Args: []string{"/workload", "hello"}, TrustedTier: true,
		RegistryAuth: &apiv1.RegistryAuth{Username: "rig", Password: "s3cret", PlainHttp: true}}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: pulled}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_FAILED || !strings.Contains(e.GetReason(), "plain HTTP") {
		t.Errorf("pull with credentials over plain HTTP: %v, events %v; want failed naming plain HTTP", r.err, r.events)
	}
	// An open registry over plain HTTP, without credentials.
	pulled.RegistryAuth = &apiv1.RegistryAuth{PlainHttp: true}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: pulled}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || e.GetImageDigest() != wantDigest ||
		!strings.Contains(r.stdout.String(), "hello from a RigOS workload") {
		t.Errorf("pull: %v, events %v, output %q", r.err, r.events, r.stdout.String())
	}
	// Over TLS, verified against the CA roots on the measured system
	// partition (the test images carry the development CA, which signed
	// this registry's certificate for 10.0.2.2), credentials work: the
	// wrong password is refused by name, the right one pulls. A registry
	// whose certificate no carried root signed is refused before any
	// credential is offered.
	private, err := ociarchive.NewRegistry(archive, "rigos/private", "1", "rig", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	tlsRef := func(certFile, keyFile string) string {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: private}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return fmt.Sprintf("10.0.2.2:%d/rigos/private:1", l.Addr().(*net.TCPAddr).Port)
	}
	trustedRef := tlsRef(filepath.Join(env.dev, "server.crt"), filepath.Join(env.dev, "server.key"))
	pvt := &apiv1.WorkloadSpec{Id: "private", Image: trustedRef, Args: []string{"/workload", "hello"}, TrustedTier: true,
		RegistryAuth: &apiv1.RegistryAuth{Username: "rig", Password: "wrong"}}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: pvt}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_FAILED || !strings.Contains(e.GetReason(), "refused the credentials") {
		t.Errorf("TLS pull with a wrong password: %v, events %v; want refused credentials", r.err, r.events)
	}
	pvt.RegistryAuth.Password = "s3cret"
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: pvt}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || e.GetImageDigest() != wantDigest {
		t.Errorf("TLS pull with credentials: %v, events %v, output %q", r.err, r.events, r.stdout.String())
	}
	untrusted := selfSigned(t, "10.0.2.2")
	pvt.Id, pvt.Image = "untrusted", tlsRef(untrusted[0], untrusted[1])
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: pvt}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_FAILED || !strings.Contains(e.GetReason(), "certificate") {
		t.Errorf("TLS pull from a registry no carried root signed: %v, events %v; want failed on its certificate", r.err, r.events)
	}
	t.Logf("TLS registry: wrong password refused, pull with credentials ran, unknown CA refused")

	// The archive's image name was never stored (archives are stored
	// under a name of the workload's own), and an unpinned reference is
	// always resolved at its registry: with no archive sent and no
	// registry serving it, the archive's name finds nothing.
	planted := &apiv1.WorkloadSpec{Id: "planted", Image: ociarchive.WorkloadName, Args: []string{"/workload", "hello"}}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: planted}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_FAILED {
		t.Errorf("archive image name without the archive: %v, events %v; want failed (not taken from the store)", r.err, r.events)
	}
	t.Logf("pulled: running %s after the request (pull and unpack)", r.running.Round(time.Millisecond))

	// Network, granted per workload: outbound (to a server on the host,
	// 10.0.2.2 in the guest), none, and a published port.
	hostSrv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostSrv.Close()
	go func() {
		for {
			c, err := hostSrv.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello from the host")
			c.Close()
		}
	}()
	hostAddr := fmt.Sprintf("10.0.2.2:%d", hostSrv.Addr().(*net.TCPAddr).Port)
	out := spec("outbound", "fetch", hostAddr)
	out.Network = &apiv1.NetworkPolicy{Outbound: true}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: out, ImageArchive: archive}, nil)
	if e := r.last(); r.err != nil || e.GetExitCode() != 0 || !strings.Contains(r.stdout.String(), "fetched: hello from the host") {
		t.Errorf("outbound workload: %v, events %v, output %q", r.err, r.events, r.stdout.String())
	}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("isolated", "fetch", hostAddr), ImageArchive: archive}, nil)
	if e := r.last(); r.err != nil || e.GetExitCode() == 0 || !strings.Contains(r.stdout.String(), "fetch error") {
		t.Errorf("workload without network: %v, events %v, output %q; want no connection", r.err, r.events, r.stdout.String())
	}
	serve := spec("server", "serve", "9090")
	serve.Network = &apiv1.NetworkPolicy{Ports: []uint32{9090}}
	_, serving := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: serve, ImageArchive: archive},
		func(out string) bool { return strings.Contains(out, "serving on port 9090") })
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", fwdPort), 10*time.Second)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if line != "workload server answers\n" {
			t.Errorf("published port answered %q", line)
		}
	} else {
		t.Errorf("published port: %v", err)
	}
	if _, err := v.admin.StopWorkload(ctx, &apiv1.StopWorkloadRequest{NodeId: node, WorkloadId: "server"}); err != nil {
		t.Fatal(err)
	}
	<-serving

	// Over its memory limit: OOM-killed, and reported so.
	oom := spec("oom", "eat", "200")
	oom.Resources.MemoryBytes = 32 << 20
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: oom, ImageArchive: archive}, nil)
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || !e.GetOomKilled() ||
		!strings.Contains(e.GetReason(), "out of memory") {
		t.Errorf("oom: %v, events %v", r.err, r.events)
	}

	// Requests the node cannot honour fail by name and start nothing. A
	// request that is malformed whatever the node (a port out of range)
	// is refused by the verifier before it is sent (apiv1 validation).
	for name, c := range map[string]struct {
		mod        func(*apiv1.RunWorkloadRequest)
		want       string
		atVerifier bool
	}{
		"beyond plan": {func(r *apiv1.RunWorkloadRequest) { r.Spec.Resources.MemoryBytes = 400 << 20 }, "memory 400 MiB beyond the node's ASK plan (320 MiB)", false},
		"gpus":        {func(r *apiv1.RunWorkloadRequest) { r.Spec.Resources.Gpus = 1 }, "not enough GPUs", false},
		"bad port":    {func(r *apiv1.RunWorkloadRequest) { r.Spec.Network = &apiv1.NetworkPolicy{Ports: []uint32{70000}} }, "port 70000", true},
		"no image":    {func(r *apiv1.RunWorkloadRequest) { r.Spec.Image = "rigos.test/absent:1" }, "image not found", false},
	} {
		req := &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("bad-"+strings.ReplaceAll(name, " ", "-"), "hello"), ImageArchive: archive}
		c.mod(req)
		r, _ := runWorkload(ctx, v, req, nil)
		if c.atVerifier {
			if status.Code(r.err) != codes.InvalidArgument || !strings.Contains(r.err.Error(), c.want) || len(r.events) != 0 {
				t.Errorf("%s: %v, events %v; want refused by the verifier with %q", name, r.err, r.events, c.want)
			}
			continue
		}
		if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_FAILED || !strings.Contains(e.GetReason(), c.want) {
			t.Errorf("%s: %v, events %v; want failed with %q", name, r.err, r.events, c.want)
		}
	}

	// A long-running workload; the next appraisal names every workload
	// that ran, by image digest, and the long one survives it.
	_, ticking := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("ticker", "sleep"), ImageArchive: archive},
		func(out string) bool { return strings.Contains(out, "tick 1") })
	seen := len(v.changes) // drain what came before
	for i := 0; i < seen; i++ {
		<-v.changes
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node, History: 1})
		if err != nil {
			t.Fatal(err)
		}
		if h := d.GetHistory(); len(h) > 0 && strings.Contains(strings.Join(h[0].GetWorkloads(), " "), "ticker@"+wantDigest) &&
			d.GetNode().GetState() == apiv1.NodeState_NODE_STATE_TRUSTED {
			t.Logf("appraisal: %s; workloads %v", h[0].GetReason(), h[0].GetWorkloads())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no appraisal named the workloads: %v", d.GetHistory())
		}
		select {
		case <-v.changes: // an appraisal happened
		case <-time.After(5 * time.Second):
		}
	}
	stopped, err := v.admin.StopWorkload(ctx, &apiv1.StopWorkloadRequest{NodeId: node, WorkloadId: "ticker", Reason: "customer cancelled"})
	if err != nil || stopped.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED || stopped.GetReason() != "customer cancelled" {
		t.Fatalf("stop: %v %v", stopped, err)
	}
	// Still running when stopped, after the appraisal that named it.
	if r := <-ticking; r.last().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED || !strings.Contains(r.stdout.String(), "tick 1") {
		t.Errorf("ticker: events %v, output %q; want it killed by the stop", r.events, r.stdout.String())
	}
	idle, busy := agentRSS(vm.ConsoleText())
	t.Logf("agent RSS: idle %v KiB, with a workload %v KiB", idle, busy)

	// A trusted-tier workload writes a marker to its disk, then the node
	// is revoked: the workload is killed and the verifier records why.
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	marker := "RIGOS-MARKER-" + hex.EncodeToString(b)
	_, done := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("secret", "marker", marker), ImageArchive: archive},
		func(out string) bool { return strings.Contains(out, "marker written") })
	revoked := time.Now()
	if _, err := v.admin.Revoke(ctx, &apiv1.RevokeRequest{NodeId: node, Reason: "test: owner tampering suspected"}); err != nil {
		t.Fatal(err)
	}
	r = <-done
	if e := r.last(); r.err != nil || e.GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED || !strings.Contains(e.GetReason(), "owner tampering suspected") {
		t.Fatalf("secret after revocation: %v, events %v", r.err, r.events)
	}
	t.Logf("revocation → workload killed in %s: %s", time.Since(revoked).Round(time.Millisecond), r.last().GetReason())
	d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
	if err != nil {
		t.Fatal(err)
	}
	if w := d.GetWorkloads(); len(w) == 0 || w[0].GetId() != "secret" || w[0].GetState() != apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
		t.Errorf("verifier's workload record = %v, want secret killed first", w)
	}
	// Untrusted now: a trusted-tier workload is refused.
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: spec("late", "hello"), ImageArchive: archive}, nil)
	if r.err == nil || !strings.Contains(r.err.Error(), "not trusted") {
		t.Errorf("trusted-tier workload on a revoked node: %v, events %v", r.err, r.events)
	}

	// A (non-trusted-tier) workload is still running when the power goes.
	_, leftover := runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, ImageArchive: archive,
		Spec: &apiv1.WorkloadSpec{Id: "leftover", ImageArchive: true, Args: []string{"/workload", "sleep"}}},
		func(out string) bool { return strings.Contains(out, "tick 1") })

	// Power off; the owner reads the disk: no plaintext marker. The
	// state header (plaintext by design) shows the scan can see data.
	appraisals := d.GetNode().GetAppraisals()
	vm.Stop()
	if r := <-leftover; r.err == nil {
		t.Errorf("the leftover workload's stream ended cleanly at power-off: %v", r.events)
	}
	// The owner's view: the disk as a raw image, as dd would copy it.
	rawPath := filepath.Join(t.TempDir(), "owner.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", Disk(dir), rawPath).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	raw, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(marker)) {
		t.Fatal("the marker is readable on the powered-off disk")
	}
	state := statePartition(t, rawPath, raw)
	if !bytes.HasPrefix(state, []byte("LUKS\xba\xbe")) {
		t.Fatal("the STATE partition does not start with a LUKS2 header: is this the VM's disk?")
	}
	// cryptsetup recognises the volume and our token; without the TPM
	// there is no passphrase to give it.
	hdr := filepath.Join(t.TempDir(), "state-header")
	if err := os.WriteFile(hdr, state[:16<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cryptsetup", "luksDump", hdr).CombinedOutput(); err != nil || !strings.Contains(string(out), "rigos-tpm2") {
		t.Errorf("cryptsetup luksDump of the state partition: %v\n%s", err, out)
	}
	t.Logf("disk scan: %d MiB, no marker", len(raw)>>20)

	// The same genuine image boots again: the state unlocks, and the
	// image is still in containerd's store (no archive is sent, and there
	// is no registry to pull from).
	vm = startVM(t, o)
	if _, err := vm.WaitFor(bootDeadline, regexp.MustCompile(`rigos: state partition \S+ unlocked`)); err != nil {
		t.Fatalf("state not unlocked after reboot: %v\n%s", err, tail(vm.ConsoleText(), 30))
	}
	deadline = time.Now().Add(bootDeadline)
	for {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
		if err == nil && d.GetNode().GetConnected() && d.GetNode().GetAppraisals() > appraisals {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not reconnect after the reboot: %v %v", d, err)
		}
		time.Sleep(time.Second) // polling the verifier, bounded
	}
	// What ran before the reboot is cleaned up and reported, not left
	// running unsupervised.
	for {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
		if err != nil {
			t.Fatal(err)
		}
		if w := d.GetWorkloads(); len(w) > 0 && w[0].GetId() == "leftover" && w[0].GetState() == apiv1.WorkloadState_WORKLOAD_STATE_KILLED {
			t.Logf("after reboot: %s %s", w[0].GetId(), w[0].GetReason())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leftover workload was not reported stopped: %v", d.GetWorkloads())
		}
		time.Sleep(time.Second) // polling the verifier, bounded
	}
	// Pinned by digest: the stored image of that digest serves it.
	again := &apiv1.WorkloadSpec{Id: "again", Image: ociarchive.WorkloadName + "@" + wantDigest, Args: []string{"/workload", "hello"},
		Resources: &apiv1.Resources{MemoryBytes: 64 << 20}}
	r, _ = runWorkload(ctx, v, &apiv1.RunWorkloadRequest{NodeId: node, Spec: again}, nil)
	if r.err != nil || r.last().GetState() != apiv1.WorkloadState_WORKLOAD_STATE_EXITED || !strings.Contains(r.stdout.String(), "hello from") {
		t.Fatalf("after reboot: %v, events %v, output %q", r.err, r.events, r.stdout.String())
	}
	t.Logf("after reboot: image present, running %s after the request", r.running.Round(time.Millisecond))
}

var rssLine = regexp.MustCompile(`msg="agent resources" rss_kib=(\d+) workloads=(\d+)`)

// agentRSS returns the agent's resident memory readings from the console,
// without workloads and with at least one.
func agentRSS(console string) (idle, busy []string) {
	for _, m := range rssLine.FindAllStringSubmatch(console, -1) {
		if m[2] == "0" {
			idle = append(idle, m[1])
		} else {
			busy = append(busy, m[1])
		}
	}
	return idle, busy
}

// statePartition returns the RIGOS-STATE partition of a raw disk image.
func statePartition(t *testing.T, path string, raw []byte) []byte {
	t.Helper()
	start, size := partitionRange(t, path, layout.StatePartition)
	return raw[start : start+size]
}

// selfSigned writes a self-signed certificate for ip and its key,
// returning their paths: a registry no CA root of the image vouches for.
func selfSigned(t *testing.T, ip string) [2]string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "untrusted registry"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP(ip)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := [2]string{filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")}
	os.WriteFile(out[0], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(out[1], pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return out
}
