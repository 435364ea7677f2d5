package pid1

import (
	"errors"
	"time"

	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/efiboot"
)

// findBootDisk restricts the partitions init opens to the disk the
// firmware booted from: the one holding the partition systemd-stub names
// in LoaderDevicePartUUID. With the stick and an installed disk both
// attached, each holds RigOS partitions of the same names. Without the
// variable, or when no disk (within 20 s) or more than one (a clone)
// holds that partition, partitions are found by name on any disk, as
// before, and the console says why; dm-verity still checks every block
// of the system partition against the root hash on the measured command
// line.
func (b *boot) findBootDisk() error {
	id, err := efiboot.LoaderDevicePartUUID(EFIVarsDir)
	if err != nil {
		say("boot disk: %v; partitions are found by name on any disk", err)
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		disks, err := blockdev.ListDisks(b.sys.root)
		if err == nil {
			d, err := blockdev.DiskWithPartition("/dev", disks, id)
			if err == nil {
				b.sys.disk = d.Name
				say("boot disk %s (holds the partition the UKI was loaded from, %s)", d.Name, id)
				return nil
			}
			if errors.Is(err, blockdev.ErrAmbiguous) || time.Now().After(deadline) {
				say("boot disk: %v; partitions are found by name on any disk", err)
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond) // waiting for the disks to be scanned, bounded by the deadline
	}
}
