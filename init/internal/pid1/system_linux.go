package pid1

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/devmapper"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/verity"
)

// mountSystem sets up dm-verity over the booted slot's system partition
// (RIGOS-SYSTEM-A or -B, named by layout.SlotParam) with the root hash
// from the (measured) command line and mounts it read-only. Every block
// read is checked against that root hash; a changed block reads as an
// I/O error. It reports false when the image has no system partition; a
// command line with a root hash but no valid slot is an error.
func mountSystem(sys sysfs) (bool, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return false, err
	}
	args, err := cmdline.Parse(string(b))
	if err != nil {
		return false, err
	}
	param, ok := args[layout.SystemParam]
	if !ok {
		return false, nil
	}
	root, salt, blocks, err := verity.ParseParam(param)
	if err != nil {
		return false, err
	}
	slot, err := bootSlot(args)
	if err != nil {
		return false, err
	}
	dev, err := sys.findPartition(layout.SystemPartition(slot), 20*time.Second)
	if err != nil {
		return false, err
	}
	params := devmapper.VerityParams(dev, blocks, root, salt)
	mapped, err := devmapper.CreateReadOnly(layout.SystemMapping, []devmapper.Target{
		{Start: 0, Length: blocks * verity.BlockSize / 512, Type: "verity", Params: params},
	})
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(layout.SystemMount, 0o755); err != nil {
		return false, err
	}
	if err := unix.Mount(mapped, layout.SystemMount, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return false, fmt.Errorf("mounting the system partition: %w", err)
	}
	say("system partition %s (slot %s) verified by dm-verity (root %x…) and mounted on %s", dev, slot, root[:6], layout.SystemMount)
	return true, nil
}

// mountESP mounts the RIGOS-ESP partition on layout.ESPMount,
// read-only, without device files, set-id or executables: the agent
// reads the supplier's ASK plan there.
func mountESP(sys sysfs) error {
	num, err := sys.findPartition(layout.ESPPartition, 5*time.Second)
	if err != nil {
		return err
	}
	dev, err := sys.blockDevice(num)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(layout.ESPMount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, layout.ESPMount, "vfat", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"codepage=437,iocharset=ascii,fmask=0133,dmask=0022"); err != nil {
		return fmt.Errorf("mounting the EFI system partition: %w", err)
	}
	return nil
}
