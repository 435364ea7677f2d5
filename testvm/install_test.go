package testvm

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// TestInstall installs a node booted from its stick onto a blank second
// disk, at the platform's request: requests it must refuse are refused
// by name first (the disk it booted from, a disk that is not there); the
// install writes and reads back the disk, adds a boot entry and reboots.
// The node then boots with the stick removed, from the installed disk
// through its new boot entry, creates its state there, and is trusted
// again with the same identity (EK): the boot variables and GPT that
// changed are not firmware changes.
func TestInstall(t *testing.T) {
	setup(t)
	img, err := buildImage("genuine", env.keys, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "internal.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", target, "4G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, b)
	}
	o := Options{Image: img.QCOW2, Vars: env.vars, Dir: dir, Memory: "512M", Timeout: 15 * time.Minute, Reuse: true,
		Disks: []string{target}}
	vm := startVM(t, o)
	v := startVerifier(t, img.Manifest)
	node := awaitTrusted(t, v, vm, "from the stick").GetNodeId()
	// systemd-stub names the partition the UKI came from; init opens
	// partitions on that disk only.
	if !strings.Contains(vm.ConsoleText(), "rigos: boot disk vda ") {
		t.Errorf("init did not find the boot disk (the stick, vda):\n%s", grepLines(vm.ConsoleText(), "boot disk"))
	}
	before, err := v.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: node})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	for disk, want := range map[string]string{"vda": "booted from", "nvme9n1": "no disk nvme9n1"} {
		e, err := v.admin.Install(ctx, &apiv1.InstallRequest{NodeId: node, Disk: disk})
		if err != nil || e.GetState() != apiv1.InstallState_INSTALL_STATE_FAILED || !strings.Contains(e.GetReason(), want) {
			t.Errorf("install to %s: %v, %v; want FAILED naming %q", disk, e, err, want)
		}
	}
	if _, err := v.admin.Install(ctx, &apiv1.InstallRequest{NodeId: node, Disk: "../vda"}); err == nil {
		t.Error("install to ../vda was sent to the node; want it refused by the verifier")
	}

	start := time.Now()
	e, err := v.admin.Install(ctx, &apiv1.InstallRequest{NodeId: node, Disk: "vdb"})
	if err != nil || e.GetState() != apiv1.InstallState_INSTALL_STATE_REBOOTING {
		t.Fatalf("install to vdb: %v, %v\n%s", e, err, tail(vm.ConsoleText(), 40))
	}
	t.Logf("install: %d MiB written in %.1fs, read back in %.1fs, boot entry Boot%04X; %.1fs from the request",
		e.GetBytes()>>20, float64(e.GetWriteMs())/1000, float64(e.GetVerifyMs())/1000, e.GetBootEntry(), time.Since(start).Seconds())
	select {
	case <-vm.Done(): // QEMU runs with -no-reboot: the reboot ends it
	case <-time.After(2 * time.Minute):
		t.Fatalf("the node did not reboot within 2 minutes of the install\n%s", tail(vm.ConsoleText(), 40))
	}
	if !strings.Contains(vm.ConsoleText(), "the agent asked for a reboot") {
		t.Errorf("console does not say why init rebooted:\n%s", tail(vm.ConsoleText(), 20))
	}

	// The stick is out: the internal disk alone, through the boot entry.
	// Only appraisals after this count.
	down, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
	if err != nil {
		t.Fatal(err)
	}
	o.NoImage = true
	reboot := time.Now()
	vm = startVM(t, o)
	deadline := time.Now().Add(bootDeadline)
	for {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
		if err == nil && d.GetNode().GetConnected() && d.GetNode().GetAppraisals() > down.GetNode().GetAppraisals() {
			st := d.GetNode().GetState()
			if st == apiv1.NodeState_NODE_STATE_TRUSTED {
				if d.GetNode().GetEkFingerprint() != before.GetNode().GetEkFingerprint() {
					t.Errorf("EK after the install %s, before %s", d.GetNode().GetEkFingerprint(), before.GetNode().GetEkFingerprint())
				}
				break
			}
			if st == apiv1.NodeState_NODE_STATE_UNTRUSTED {
				t.Fatalf("installed node untrusted: %s\n%s", d.GetNode().GetReason(), tail(vm.ConsoleText(), 40))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("installed node not trusted again: %v %v\n%s", d, err, tail(vm.ConsoleText(), 40))
		}
		select {
		case <-vm.Done():
			t.Fatalf("the VM stopped booting from the installed disk: %v\n%s", vm.err, tail(vm.ConsoleText(), 40))
		case <-time.After(time.Second): // polling the verifier, bounded by the deadline
		}
	}
	t.Logf("installed disk: reboot → trusted in %.1fs", time.Since(reboot).Seconds())
	// OVMF says which boot entry it started; the state is new, on the
	// installed disk.
	console := vm.ConsoleText()
	if want := fmt.Sprintf(`starting Boot%04X "RigOS"`, e.GetBootEntry()); !strings.Contains(console, want) {
		t.Errorf("console lacks %q: the firmware did not boot the new entry\n%s", want, tail(console, 60))
	}
	if !regexp.MustCompile(`state partition \S+ created`).MatchString(console) {
		t.Errorf("no new state partition on the installed disk:\n%s", tail(console, 40))
	}

	// Power cut, and the stick plugged back in (vda, the installed disk
	// now vdb): the firmware still boots the disk's entry, init opens the
	// partitions on that disk, not the stick's, and the state the first
	// boot from the disk sealed unlocks.
	vm.Stop()
	down, err = v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
	if err != nil {
		t.Fatal(err)
	}
	o.NoImage = false
	vm = startVM(t, o)
	if _, err := vm.WaitFor(bootDeadline, regexp.MustCompile(`rigos: state partition /dev/vdb4 unlocked`)); err != nil {
		t.Fatalf("the installed disk's state was not unlocked with the stick attached: %v\n%s", err, grepLines(vm.ConsoleText(), "boot disk", "state partition", "starting Boot"))
	}
	if !strings.Contains(vm.ConsoleText(), "rigos: boot disk vdb ") {
		t.Errorf("boot disk not vdb:\n%s", grepLines(vm.ConsoleText(), "boot disk"))
	}
	for deadline := time.Now().Add(bootDeadline); ; {
		d, err := v.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: node})
		if err == nil && d.GetNode().GetAppraisals() > down.GetNode().GetAppraisals() && d.GetNode().GetState() == apiv1.NodeState_NODE_STATE_TRUSTED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not trusted with the stick back in: %v %v", d, err)
		}
		time.Sleep(time.Second) // polling the verifier, bounded
	}
}

// grepLines returns the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
