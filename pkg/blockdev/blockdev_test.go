package blockdev

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/layout"
)

// fakeSys writes a sysfs tree: the stick (vda, RigOS), an empty NVMe
// disk, a smaller empty one, a disk with a foreign partition, a
// read-only disk and a loop device.
func fakeSys(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, "class/block", p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := func(name string, sectors int, ro bool, parts ...string) {
		write(name+"/size", itoa(sectors)+"\n")
		write(name+"/ro", map[bool]string{true: "1\n", false: "0\n"}[ro])
		write(name+"/removable", "0\n")
		for i, p := range parts {
			part := name + itoa(i+1)
			write(name+"/"+part+"/partition", itoa(i+1)+"\n")
			write(name+"/"+part+"/uevent", "MAJOR=252\nDEVTYPE=partition\nPARTN="+itoa(i+1)+"\nPARTNAME="+p+"\n")
			write(part+"/partition", itoa(i+1)+"\n") // the flat class/block entry of a partition
		}
	}
	disk("vda", 4<<21, false, layout.ESPPartition, layout.SystemPartition(layout.SlotA), layout.SystemPartition(layout.SlotB), layout.StatePartition)
	disk("nvme0n1", 1<<31, false)
	disk("nvme1n1", 1<<30, false)
	disk("sdb", 1<<32, false, "owner's data")
	disk("sdc", 1<<33, true)
	disk("loop0", 1<<20, false)
	return root
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestListDisksAndBootDisk(t *testing.T) {
	disks, err := ListDisks(fakeSys(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range disks {
		names = append(names, d.Name)
	}
	if diff := cmp.Diff([]string{"nvme0n1", "nvme1n1", "sdb", "sdc", "vda"}, names); diff != "" {
		t.Fatalf("disks (-want +got):\n%s", diff)
	}
	boot, err := BootDisk(disks)
	if err != nil || boot.Name != "vda" || boot.Size != 4<<21*512 {
		t.Fatalf("BootDisk = %+v, %v", boot, err)
	}
	// Two RigOS disks: which one booted cannot be told apart.
	twice := append(disks, Disk{Name: "nvme2n1", Partitions: []string{layout.ESPPartition}})
	if _, err := BootDisk(twice); err == nil || !strings.Contains(err.Error(), "both hold RigOS") {
		t.Errorf("BootDisk(two RigOS disks) = %v", err)
	}
}

func TestPartitionName(t *testing.T) {
	for disk, want := range map[string]string{"vda": "vda2", "sdb": "sdb2", "nvme0n1": "nvme0n1p2", "mmcblk0": "mmcblk0p2"} {
		if got := (Disk{Name: disk}).PartitionName(2); got != want {
			t.Errorf("PartitionName(%s, 2) = %s, want %s", disk, got, want)
		}
	}
}
