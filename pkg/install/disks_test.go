package install

import (
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/layout"
)

// The target an install asks for: by name or "auto", never the boot
// disk, a read-only disk, a path or a name that is no disk here.
func TestTarget(t *testing.T) {
	boot := blockdev.Disk{Name: "vda", Size: 8 << 30, Partitions: []string{layout.ESPPartition}}
	disks := []blockdev.Disk{
		{Name: "nvme0n1", Size: 1 << 40}, {Name: "nvme1n1", Size: 1 << 39},
		{Name: "sdb", Size: 1 << 41, Partitions: []string{"owner's data"}}, {Name: "sdc", Size: 1 << 42, ReadOnly: true}, boot,
	}
	for want, tc := range map[string]struct {
		ask  string
		fail string
	}{
		"nvme0n1": {ask: Auto}, // the largest writable disk without partitions
		"nvme1n1": {ask: "/dev/nvme1n1"},
		"sdb":     {ask: "sdb"}, // named: allowed; Install then refuses it unless wiped
		"vda":     {ask: "vda", fail: "booted from"},
		"sdc":     {ask: "sdc", fail: "read-only"},
		"x":       {ask: "nvme9n1", fail: "no disk nvme9n1"},
		"y":       {ask: "../vda", fail: "kernel name"},
		"z":       {ask: "vda1; reboot", fail: "kernel name"},
		"loop0":   {ask: "loop0", fail: "no disk loop0"},
	} {
		d, err := Target(disks, boot, tc.ask)
		switch {
		case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
			t.Errorf("Target(%q) = %v, %v; want an error naming %q", tc.ask, d.Name, err, tc.fail)
		case tc.fail == "" && (err != nil || d.Name != want):
			t.Errorf("Target(%q) = %v, %v; want %s", tc.ask, d.Name, err, want)
		}
	}
}
