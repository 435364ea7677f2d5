package pid1

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
)

// fakeSysfs writes files (path relative to the sysfs root: contents)
// into a new folder and returns the sysfs there.
func fakeSysfs(t *testing.T, files map[string]string) sysfs {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return newSysfs(root)
}

// A disk with the RigOS partitions and a second, unpartitioned disk, as
// the kernel shows them.
var rigDisk = map[string]string{
	"class/block/vda/uevent":  "MAJOR=252\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n",
	"class/block/vda1/uevent": "MAJOR=252\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=" + layout.ESPPartition + "\n",
	"class/block/vda2/uevent": "MAJOR=252\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=" + layout.SystemPartition(layout.SlotA) + "\n",
	"class/block/vda3/uevent": "MAJOR=252\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=" + layout.SystemPartition(layout.SlotB) + "\n",
	"class/block/vda4/uevent": "MAJOR=252\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=" + layout.StatePartition + "\n",
	"class/block/sda/uevent":  "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n",
	"dev/block/252:1/uevent":  "MAJOR=252\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTNAME=" + layout.ESPPartition + "\n",
	"dev/block/252:2/uevent":  "MAJOR=252\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTNAME=" + layout.SystemPartition(layout.SlotA) + "\n",
	"dev/block/252:3/uevent":  "MAJOR=252\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=" + layout.SystemPartition(layout.SlotB) + "\n",
	"dev/block/252:4/uevent":  "MAJOR=252\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTNAME=" + layout.StatePartition + "\n",
	"dev/block/8:0/uevent":    "MAJOR=8\nMINOR=0\nDEVTYPE=disk\n",
}

func TestFindPartition(t *testing.T) {
	sys := fakeSysfs(t, rigDisk)
	for name, want := range map[string]string{
		layout.ESPPartition: "252:1", "RIGOS-SYSTEM-A": "252:2", "RIGOS-SYSTEM-B": "252:3", layout.StatePartition: "252:4",
	} {
		if got, err := sys.findPartition(name, 0); err != nil || got != want {
			t.Errorf("findPartition(%s) = %q, %v, want %q", name, got, err, want)
		}
	}
	// Names match whole: the pre-A/B name is a prefix of both slots'.
	for _, name := range []string{"RIGOS-OTHER", "RIGOS-SYSTEM", "RIGOS-SYSTEM-", "RIGOS-SYSTEM-C", "rigos-system-a", ""} {
		if got, err := sys.findPartition(name, 0); err == nil {
			t.Errorf("findPartition(%q) = %q, want an error", name, got)
		}
	}
	if got, err := newSysfs(t.TempDir()).findPartition(layout.StatePartition, 0); err == nil {
		t.Errorf("findPartition(no disks) = %q, want an error", got)
	}
}

func TestBlockDevice(t *testing.T) {
	sys := fakeSysfs(t, rigDisk)
	for num, want := range map[string]string{"252:1": "/dev/vda1", "252:2": "/dev/vda2", "252:3": "/dev/vda3", "252:4": "/dev/vda4"} {
		if got, err := sys.blockDevice(num); err != nil || got != want {
			t.Errorf("blockDevice(%s) = %q, %v, want %q", num, got, err, want)
		}
	}
	for _, num := range []string{"8:0", "252:9"} { // no DEVNAME; no device
		if got, err := sys.blockDevice(num); err == nil {
			t.Errorf("blockDevice(%s) = %q, want an error", num, got)
		}
	}
	// The partition findPartition finds is the one blockDevice names.
	for name, want := range map[string]string{
		layout.SystemPartition(layout.SlotA): "/dev/vda2", layout.SystemPartition(layout.SlotB): "/dev/vda3",
		layout.StatePartition: "/dev/vda4",
	} {
		num, err := sys.findPartition(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := sys.blockDevice(num); err != nil || got != want {
			t.Errorf("blockDevice(findPartition(%s)) = %q, %v, want %s", name, got, err, want)
		}
	}
}

// The modules planned for a machine follow the devices its sysfs lists.
func TestModulePlanFromSysfs(t *testing.T) {
	mods := []bootconfig.Module{
		{Name: "virtio"}, {Name: "virtio_ring"},
		{Name: "virtio_pci", Deps: []string{"virtio", "virtio_ring"}, Devices: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}, Wanted: true},
		{Name: "virtio_blk", Deps: []string{"virtio"}, Devices: []string{"virtio:d00000002v*"}, Wanted: true},
		{Name: "e1000e", Devices: []string{"pci:v00008086d000010D3sv*sd*bc*sc*i*"}, Wanted: true},
		{Name: "vfat", Wanted: true},
	}
	sys := fakeSysfs(t, map[string]string{
		"bus/pci/devices/0000:00:04.0/modalias":  "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
		"bus/pci/devices/0000:00:04.0/vendor":    "0x1af4\n",
		"bus/pci/devices/0000:00:01.0/modalias":  "pci:v00008086d00007000sv00000000sd00000000bc06sc01i00\n",
		"bus/platform/devices/serial8250/uevent": "DRIVER=serial8250\n", // a device without modalias
	})
	aliases := sys.deviceAliases()
	slices.Sort(aliases)
	if want := []string{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
		"pci:v00008086d00007000sv00000000sd00000000bc06sc01i00"}; !slices.Equal(aliases, want) {
		t.Fatalf("deviceAliases() = %v, want %v", aliases, want)
	}
	if got, want := names(modulePlan(mods, aliases, map[string]bool{})), []string{"virtio", "virtio_ring", "virtio_pci", "vfat"}; !slices.Equal(got, want) {
		t.Errorf("round 1 = %v, want %v", got, want)
	}
	// virtio_pci made the virtio block device appear.
	sys = fakeSysfs(t, map[string]string{
		"bus/pci/devices/0000:00:04.0/modalias": "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
		"bus/virtio/devices/virtio0/modalias":   "virtio:d00000002v00001AF4\n",
	})
	loaded := map[string]bool{"virtio": true, "virtio_ring": true, "virtio_pci": true, "vfat": true}
	if got, want := names(modulePlan(mods, sys.deviceAliases(), loaded)), []string{"virtio_blk"}; !slices.Equal(got, want) {
		t.Errorf("round 2 = %v, want %v", got, want)
	}
	if got := newSysfs("").root; got != "/sys" {
		t.Errorf("newSysfs(\"\").root = %q, want /sys", got)
	}
}

// With the boot disk known, partitions are looked for on it alone: the
// stick (vda) and the installed disk (vdb) hold the same names.
func TestFindPartitionOnBootDisk(t *testing.T) {
	files := maps.Clone(rigDisk)
	for i, name := range []string{layout.ESPPartition, layout.SystemPartition(layout.SlotA), layout.SystemPartition(layout.SlotB), layout.StatePartition} {
		n := strconv.Itoa(i + 1)
		// Real sysfs shows each partition in its disk's folder too.
		files["class/block/vda/vda"+n+"/uevent"] = "MAJOR=252\nMINOR=" + n + "\nDEVTYPE=partition\nPARTNAME=" + name + "\n"
		files["class/block/vdb/vdb"+n+"/uevent"] = "MAJOR=252\nMINOR=1" + n + "\nDEVTYPE=partition\nPARTNAME=" + name + "\n"
	}
	sys := fakeSysfs(t, files)
	sys.disk = "vdb"
	if got, err := sys.findPartition(layout.StatePartition, 0); err != nil || got != "252:14" {
		t.Errorf("findPartition(state) on vdb = %q, %v; want vdb4 (252:14)", got, err)
	}
	sys.disk = "vda"
	if got, err := sys.findPartition(layout.StatePartition, 0); err != nil || got != "252:4" {
		t.Errorf("findPartition(state) on vda = %q, %v; want vda4 (252:4)", got, err)
	}
	sys.disk = "sda"
	if _, err := sys.findPartition(layout.StatePartition, 0); err == nil || !strings.Contains(err.Error(), "boot disk sda") {
		t.Errorf("findPartition on a disk without it: %v", err)
	}
}
