package install

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/blockdev"
)

// Auto names the disk "auto" picks: the largest writable disk with no
// partitions that is not the boot disk.
const Auto = apiv1.InstallAuto

// Target resolves the disk an install was asked for, by kernel name
// (with or without "/dev/") or Auto, and refuses the boot disk, a
// read-only disk, a partition and a name that is no disk here.
func Target(disks []blockdev.Disk, boot blockdev.Disk, want string) (blockdev.Disk, error) {
	if want == Auto {
		var best *blockdev.Disk
		for i, d := range disks {
			if d.Name == boot.Name || d.ReadOnly || len(d.Partitions) > 0 || d.Size == 0 {
				continue
			}
			if best == nil || d.Size > best.Size {
				best = &disks[i]
			}
		}
		if best == nil {
			return blockdev.Disk{}, errors.New("no empty disk to install to: every disk but the boot disk is read-only or has partitions (name one, and wipe it)")
		}
		return *best, nil
	}
	name, err := apiv1.InstallDisk(want)
	if err != nil {
		return blockdev.Disk{}, err
	}
	i := slices.IndexFunc(disks, func(d blockdev.Disk) bool { return d.Name == name })
	switch {
	case i < 0:
		var names []string
		for _, d := range disks {
			names = append(names, d.Name)
		}
		return blockdev.Disk{}, fmt.Errorf("no disk %s on this node (disks: %s)", name, strings.Join(names, ", "))
	case name == boot.Name:
		return blockdev.Disk{}, fmt.Errorf("%s is the disk RigOS booted from", name)
	case disks[i].ReadOnly:
		return blockdev.Disk{}, fmt.Errorf("%s is read-only", name)
	}
	return disks[i], nil
}
