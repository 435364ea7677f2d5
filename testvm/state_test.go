package testvm

import (
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/imager/disk"
	"github.com/rigos/rigos/pkg/layout"
)

var (
	stateCreated     = regexp.MustCompile(`rigos: state partition \S+ created`)
	stateUnlocked    = regexp.MustCompile(`rigos: state partition \S+ unlocked`)
	stateUnavailable = regexp.MustCompile(`rigos: state partition unavailable: (.*)`)
)

// TestStateBoundToBuild: build A creates the state on its first boot;
// build B, signed with the same keys but with another kernel command line
// (so another PCR 11), booted on the same disk and the same TPM, does not
// unlock it (init says the PCRs differ) and leaves it untouched; build A
// booted again unlocks it. Three boots.
func TestStateBoundToBuild(t *testing.T) {
	setup(t)
	a, err := buildImage("genuine", env.keys, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same image TestTamperedImages boots for "changed command line".
	b, err := buildImage("cmdline", env.keys, []string{"rigos.debug=1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // the machine: its TPM state and firmware variables
	o := Options{Image: a.QCOW2, Vars: env.vars, Dir: dir, Timeout: bootDeadline + time.Minute}

	vm := startVM(t, o)
	if _, err := vm.WaitFor(bootDeadline, stateCreated); err != nil {
		t.Fatalf("build A did not create the state: %v\n%s", err, tail(vm.ConsoleText(), 30))
	}
	vm.Stop()
	work := t.TempDir()
	rawA := filepath.Join(work, "a.raw")
	qemuImg(t, "convert", "-O", "raw", Disk(dir), rawA)
	sumA := partitionSum(t, rawA, layout.StatePartition)

	// The owner puts build B's ESP on the rig's disk: B's image with
	// A's state partition.
	rawB := filepath.Join(work, "b.raw")
	qemuImg(t, "convert", "-O", "raw", b.QCOW2, rawB)
	copyPartition(t, rawA, rawB, layout.StatePartition)
	bootOn(t, &o, rawB)
	vm = startVM(t, o)
	i, err := vm.WaitFor(bootDeadline, stateUnavailable, stateUnlocked)
	if err != nil || i != 0 {
		t.Fatalf("build B: want the state unavailable (match %d, %v)\n%s", i, err, tail(vm.ConsoleText(), 30))
	}
	why := stateUnavailable.FindStringSubmatch(vm.ConsoleText())[1]
	if !regexp.MustCompile(`PCR values differ`).MatchString(why) {
		t.Errorf("build B: state unavailable because %q, want the PCR policy", why)
	}
	t.Logf("build B: state partition unavailable: %s", why)
	vm.Stop()
	qemuImg(t, "convert", "-O", "raw", Disk(dir), rawB)
	if partitionSum(t, rawB, layout.StatePartition) != sumA {
		t.Error("build B changed the state partition")
	}

	// Build A again, on its own disk, same TPM.
	bootOn(t, &o, rawA)
	vm = startVM(t, o)
	if i, err := vm.WaitFor(bootDeadline, stateUnlocked, stateUnavailable); err != nil || i != 0 {
		t.Fatalf("build A again: state not unlocked (match %d, %v)\n%s", i, err, tail(vm.ConsoleText(), 30))
	}
}

// bootOn makes o boot the machine in o.Dir again (same TPM state and
// firmware variables) from the raw disk raw.
func bootOn(t *testing.T, o *Options, raw string) {
	t.Helper()
	img := raw + ".qcow2"
	_ = os.Remove(img)
	qemuImg(t, "convert", "-O", "qcow2", raw, img)
	if err := os.Remove(Disk(o.Dir)); err != nil {
		t.Fatal(err)
	}
	o.Image, o.Reuse = img, true
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// partitionRange returns the byte range of the partition named name in
// the raw disk image at path.
func partitionRange(t *testing.T, path, name string) (start, size int64) {
	t.Helper()
	start, size, err := disk.Partition(path, name)
	if err != nil {
		t.Fatal(err)
	}
	return start, size
}

func partitionSum(t *testing.T, path, name string) [sha256.Size]byte {
	t.Helper()
	start, size := partitionRange(t, path, name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, start, size)); err != nil {
		t.Fatal(err)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// copyPartition copies partition name from the raw image from into the
// raw image to, where it must have the same size.
func copyPartition(t *testing.T, from, to, name string) {
	t.Helper()
	fs, fsize := partitionRange(t, from, name)
	ts, tsize := partitionRange(t, to, name)
	if fsize != tsize {
		t.Fatalf("%s is %d bytes in %s, %d in %s", name, fsize, from, tsize, to)
	}
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.NewOffsetWriter(dst, ts), io.NewSectionReader(src, fs, fsize)); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if partitionSum(t, from, name) != partitionSum(t, to, name) {
		t.Fatal("copied partition differs")
	}
}
