package testvm

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/imager"
	"github.com/rigos/rigos/pkg/layout"
)

// TestUpdate updates a node running build 1 from slot A. The first two
// updates stream the new build down the node's connection; the third,
// a rollout, has the node fetch it from an HTTPS server. The node writes
// it into slot B, seals its state's passphrase for it, sets slot B's
// boot entry in BootNext and reboots.
//
//  1. The power is cut while the node writes build 2: it boots build 1
//     from slot A again, with its state.
//  2. Build 3 cannot reach the verifier, so it is never trusted: init
//     reboots at the end of its trial (rigos.trial_timeout), the firmware
//     boots slot A, build 1 opens its state, and the verifier records the
//     update as failed.
//  3. Build 2, rolled out and fetched over HTTPS, boots from slot B,
//     opens the state build 1 handed over, is trusted and commits: after
//     a power cut the node boots build 2 again, which opens the state
//     with its own key.
//  4. The owner writes build 1's ESP and the state partition from before
//     the commit back: build 1 cannot open it (the state counter).
func TestUpdate(t *testing.T) {
	setup(t)
	one, err := buildImage("genuine", env.keys, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Build 2 differs in its build time, so in every file.
	two, err := buildImage("next-build", env.keys, nil, nil, func(o *imager.Options) { o.Epoch = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).Unix() })
	if err != nil {
		t.Fatal(err)
	}
	// Build 3's agent dials a port nothing listens on; its trial is short.
	unreachable, err := buildImage("unreachable", env.keys, []string{layout.TrialParam + "=90"}, nil, func(o *imager.Options) { o.Verifier = "10.0.2.2:9" })
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	manifests, updates := filepath.Join(dir, "manifests"), filepath.Join(dir, "updates")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range []*imager.Result{one, two, unreachable} {
		b, err := os.ReadFile(r.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(manifests, fmt.Sprintf("build%d.json", i+1)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(updates, r.Build), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{layout.BuildUKI(layout.SlotA), layout.BuildUKI(layout.SlotB), layout.BuildSystem} {
			if err := os.Symlink(filepath.Join(filepath.Dir(r.Manifest), f), filepath.Join(updates, r.Build, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The platform's HTTPS server for updates, with a certificate of the
	// development CA the images carry; it counts the system images it
	// serves.
	cert, err := tls.LoadX509KeyPair(filepath.Join(env.dev, "server.crt"), filepath.Join(env.dev, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var fetched atomic.Int32
	files := http.FileServer(http.Dir(updates))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/"+layout.BuildSystem) {
			fetched.Add(1)
		}
		files.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	v := startVerifier(t, one.Manifest, map[string]any{"manifest_dir": manifests, "update_dir": updates,
		"update_url": fmt.Sprintf("https://10.0.2.2:%d/", l.Addr().(*net.TCPAddr).Port)})
	o := Options{Image: one.QCOW2, Vars: env.vars, Dir: t.TempDir(), Memory: "512M", Timeout: 25 * time.Minute, Reuse: true}
	vm := startVM(t, o)
	node := awaitTrusted(t, v, vm, "on build 1").GetNodeId()
	if m := lastManifest(t, v, node); m != one.Build {
		t.Fatalf("trusted as %q, want build 1 (%s)", m, one.Build)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Minute)
	defer cancel()

	// A build the verifier has no manifest for is refused before the
	// node hears of it.
	if _, err := v.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: node, Build: "0123456789ab"}); err == nil || !strings.Contains(err.Error(), "no active manifest") {
		t.Errorf("update to an unknown build: %v, want it refused", err)
	}
	update := func(r *imager.Result, what string) time.Time {
		t.Helper()
		start := time.Now()
		e, err := v.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: node, Build: r.Build})
		if err != nil || e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING || e.GetSlot() != "b" {
			t.Fatalf("update to %s: %v, %v; want REBOOTING into slot b\n%s", what, e, err, tail(vm.ConsoleText(), 40))
		}
		t.Logf("update to %s: %d MiB streamed and written in %.1fs, read back in %.1fs, Boot%04X in BootNext; %.1fs from the request",
			what, e.GetBytes()>>20, float64(e.GetWriteMs())/1000, float64(e.GetVerifyMs())/1000, e.GetBootEntry(), time.Since(start).Seconds())
		select {
		case <-vm.Done(): // -no-reboot: the reboot ends QEMU
		case <-time.After(2 * time.Minute):
			t.Fatalf("the node did not reboot within 2 minutes of the update\n%s", tail(vm.ConsoleText(), 40))
		}
		return start
	}
	slotBooted := func(slot string) {
		t.Helper()
		if _, err := vm.WaitFor(bootDeadline, regexp.MustCompile(`slot `+slot+`\) verified by dm-verity`)); err != nil {
			t.Fatalf("the node did not boot slot %s: %v\n%s", slot, err, grepLines(vm.ConsoleText(), "starting Boot", "slot", "BdsDxe"))
		}
	}
	record := func(want apiv1.UpdateState, why string) *apiv1.UpdateEvent {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
			if err == nil && d.GetUpdate().GetState() == want && strings.Contains(d.GetUpdate().GetReason(), why) {
				return d.GetUpdate()
			}
			if time.Now().After(deadline) {
				t.Fatalf("the verifier's update record: %v, %v; want %s naming %q", d.GetUpdate(), err, want, why)
			}
			time.Sleep(time.Second) // polling the verifier, bounded by the deadline
		}
	}
	backOnOne := func(what string) {
		t.Helper()
		n := appraisals(t, v, node)
		reboot := time.Now()
		vm = startVM(t, o)
		slotBooted("a")
		if m := awaitAppraisal(t, v, vm, node, n); m != one.Build {
			t.Fatalf("%s: trusted as %q, want build 1 (%s)", what, m, one.Build)
		}
		t.Logf("%s: trusted as build 1 again %.1fs after the reboot", what, time.Since(reboot).Seconds())
		if !strings.Contains(vm.ConsoleText(), "state key: sealed by this build") || !strings.Contains(vm.ConsoleText(), "unlocked with the TPM-sealed key") {
			t.Errorf("%s: build 1 did not unlock its state with its own key:\n%s", what, grepLines(vm.ConsoleText(), "state"))
		}
	}

	// 1. Power cut while slot B is written.
	go func() { _, _ = v.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: node, Build: two.Build}) }()
	e := record(apiv1.UpdateState_UPDATE_STATE_RECEIVING, "")
	for e.GetBytes() == 0 { // the first progress report comes 5 s into the stream
		time.Sleep(time.Second)
		e = record(apiv1.UpdateState_UPDATE_STATE_RECEIVING, "")
	}
	vm.Stop()
	t.Logf("power cut with %d of %d MiB of the update received", e.GetBytes()>>20, e.GetTotalBytes()>>20)
	backOnOne("power cut mid-write")

	// 2. A build that is never trusted: init ends its trial.
	update(unreachable, "build 3 (unreachable)")
	vm = startVM(t, o)
	slotBooted("b")
	if _, err := vm.WaitFor(3*time.Minute, regexp.MustCompile(`update trial: not trusted and committed by`)); err != nil {
		t.Fatalf("init did not end the trial of build 3: %v\n%s", err, grepLines(vm.ConsoleText(), "update trial", "watchdog"))
	}
	select {
	case <-vm.Done():
	case <-time.After(time.Minute):
		t.Fatal("the node did not reboot at the end of the trial")
	}
	if !strings.Contains(vm.ConsoleText(), "hardware watchdogs armed") || strings.Contains(vm.ConsoleText(), "0 hardware watchdogs armed") {
		t.Errorf("no hardware watchdog armed on the trial boot:\n%s", grepLines(vm.ConsoleText(), "update trial", "watchdog"))
	}
	backOnOne("after build 3's trial")
	record(apiv1.UpdateState_UPDATE_STATE_FAILED, "came back on build "+one.Build+", not "+unreachable.Build)

	// 3. Build 2 is rolled out to the fleet (this node), which fetches it
	// over HTTPS: it boots, is trusted and commits, and the rollout is
	// done.
	start, fetch := time.Now(), true
	if _, err := v.admin.StartRollout(ctx, &apiv1.StartRolloutRequest{Build: two.Build, Percent: 100, Fetch: &fetch}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Done(): // -no-reboot: the reboot ends QEMU
	case <-time.After(4 * time.Minute):
		t.Fatalf("the rollout did not reboot the node within 4 minutes\n%s", tail(vm.ConsoleText(), 40))
	}
	t.Logf("rollout of build 2: the node fetched it over HTTPS and rebooted into it %.1fs after the rollout started", time.Since(start).Seconds())
	if fetched.Load() != 1 {
		t.Errorf("the node fetched the system image %d times from the HTTPS server, want once", fetched.Load())
	}
	// The owner copies the disk now, while build 1's key and its
	// handover are in the state's header (step 4 writes it back).
	work := t.TempDir()
	beforeCommit := filepath.Join(work, "before-commit.raw")
	qemuImg(t, "convert", "-O", "raw", Disk(o.Dir), beforeCommit)
	n := appraisals(t, v, node)
	reboot := time.Now()
	vm = startVM(t, o)
	slotBooted("b")
	if m := awaitAppraisal(t, v, vm, node, n); m != two.Build {
		t.Fatalf("after the update trusted as %q, want build 2 (%s)", m, two.Build)
	}
	t.Logf("update: reboot → trusted as build 2 in %.1fs; %.1fs from the request", time.Since(reboot).Seconds(), time.Since(start).Seconds())
	if !regexp.MustCompile(`state key: handed over by the build with PCR 11 [0-9a-f]{12}… on an update to `+two.Build).MatchString(vm.ConsoleText()) ||
		!strings.Contains(vm.ConsoleText(), "unlocked with the TPM-sealed key") {
		t.Errorf("build 2 did not open the state build 1 handed over:\n%s", grepLines(vm.ConsoleText(), "state"))
	}
	record(apiv1.UpdateState_UPDATE_STATE_COMMITTED, "")
	t.Logf("update: committed %.1fs after the reboot", time.Since(reboot).Seconds())
	if _, err := vm.WaitFor(time.Minute, regexp.MustCompile(`update trial: committed`)); err != nil {
		t.Errorf("init did not see the commit: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		ro, err := v.admin.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: two.Build})
		if err == nil && ro.GetState() == "done" {
			if nd := ro.GetNodes(); len(nd) != 1 || nd[0].GetNodeId() != node || nd[0].GetState() != "done" {
				t.Errorf("the rollout is done with %v", nd)
			}
			t.Logf("rollout of build 2: done %.1fs after it started", time.Since(start).Seconds())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout of build 2: %v, %v; want done", ro, err)
		}
		time.Sleep(time.Second) // polling the verifier, bounded by the deadline
	}

	// Committed: after a power cut the firmware boots slot B again, and
	// build 2 opens the state with its own key.
	vm.Stop()
	n = appraisals(t, v, node)
	vm = startVM(t, o)
	slotBooted("b")
	if m := awaitAppraisal(t, v, vm, node, n); m != two.Build {
		t.Fatalf("after the commit and a power cut trusted as %q, want build 2 (%s)", m, two.Build)
	}
	if !strings.Contains(vm.ConsoleText(), "state key: sealed by this build") || strings.Contains(vm.ConsoleText(), "update trial:") {
		t.Errorf("build 2 after its commit: not its own key, or still a trial:\n%s", grepLines(vm.ConsoleText(), "state", "update trial"))
	}

	// 4. The owner rolls the node back by hand: they write build 1's
	// original ESP onto the disk, so slot B's UKI is gone and the
	// firmware boots slot A, still build 1, signed and active; and the
	// state partition as it was before the commit, with build 1's key in
	// its header. The commit raised the TPM's state counter past that
	// key's bound: build 1 cannot open build 2's state, and leaves it as
	// it was.
	vm.Stop()
	raw, orig := filepath.Join(work, "node.raw"), filepath.Join(work, "build1.raw")
	qemuImg(t, "convert", "-O", "raw", Disk(o.Dir), raw)
	qemuImg(t, "convert", "-O", "raw", one.QCOW2, orig)
	copyPartition(t, orig, raw, layout.ESPPartition)
	copyPartition(t, beforeCommit, raw, layout.StatePartition)
	sum := partitionSum(t, raw, layout.StatePartition)
	bootOn(t, &o, raw)
	vm = startVM(t, o)
	slotBooted("a")
	if i, err := vm.WaitFor(bootDeadline, stateUnavailable, stateUnlocked); err != nil || i != 0 {
		t.Fatalf("build 1 with the state header from before build 2's commit: want the state unavailable (match %d, %v)\n%s", i, err, grepLines(vm.ConsoleText(), "state"))
	}
	why := stateUnavailable.FindStringSubmatch(vm.ConsoleText())[1]
	if !strings.Contains(why, "state counter has moved past") {
		t.Errorf("build 1 with the old state header: state unavailable because %q, want the state counter", why)
	}
	t.Logf("rolled back by hand to build 1 with the old state header: state unavailable: %s", why)
	vm.Stop()
	qemuImg(t, "convert", "-O", "raw", Disk(o.Dir), raw)
	if partitionSum(t, raw, layout.StatePartition) != sum {
		t.Error("build 1 changed the state partition")
	}
}

// appraisals returns how many appraisals the verifier made of node.
func appraisals(t *testing.T, v *verifier, node string) uint64 {
	t.Helper()
	d, err := v.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: node})
	if err != nil {
		t.Fatal(err)
	}
	return d.GetNode().GetAppraisals()
}

// lastManifest returns the build of node's latest verdict.
func lastManifest(t *testing.T, v *verifier, node string) string {
	t.Helper()
	d, err := v.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: node, History: 50})
	if err != nil {
		t.Fatal(err)
	}
	var last *apiv1.VerdictRecord
	for _, r := range d.GetHistory() {
		if last == nil || r.GetUnixMs() >= last.GetUnixMs() {
			last = r
		}
	}
	return last.GetManifest()
}

// awaitAppraisal waits for a trusted appraisal of node after its first n
// and returns its build; untrusted fails the test.
func awaitAppraisal(t *testing.T, v *verifier, vm *VM, node string, n uint64) string {
	t.Helper()
	for deadline := time.Now().Add(bootDeadline); ; {
		d, err := v.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: node})
		if err == nil && d.GetNode().GetConnected() && d.GetNode().GetAppraisals() > n {
			switch d.GetNode().GetState() {
			case apiv1.NodeState_NODE_STATE_TRUSTED:
				return lastManifest(t, v, node)
			case apiv1.NodeState_NODE_STATE_UNTRUSTED:
				// QEMU killed, swtpm still ends orderly and says its clock is
				// safe although it went back to the last value it saved; a
				// real TPM that loses power says it is not, and the verifier
				// accepts that. Such a verdict passes once the clock is past
				// the old value again, at the next spot check.
				if !strings.HasPrefix(d.GetNode().GetReason(), "clock: clock went back") {
					t.Fatalf("node untrusted: %s\n%s", d.GetNode().GetReason(), tail(vm.ConsoleText(), 40))
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new trusted appraisal: %v %v\n%s", d, err, tail(vm.ConsoleText(), 40))
		}
		select {
		case <-vm.Done():
			t.Fatalf("the VM stopped: %v\n%s", vm.err, tail(vm.ConsoleText(), 40))
		case <-time.After(time.Second): // polling the verifier, bounded by the deadline
		}
	}
}
