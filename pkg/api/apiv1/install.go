package apiv1

import (
	"fmt"
	"regexp"
	"strings"
)

// InstallAuto is the Install disk that picks the largest writable disk
// without partitions.
const InstallAuto = "auto"

var diskNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// InstallDisk checks an Install's disk (a whole disk's kernel name, with
// or without "/dev/", or InstallAuto) and returns the kernel name.
func InstallDisk(disk string) (string, error) {
	name := strings.TrimPrefix(disk, "/dev/")
	if !diskNamePattern.MatchString(name) {
		return "", fmt.Errorf("disk %s: want a whole disk's kernel name such as nvme0n1 or sdb (1-32 letters, digits, '-' or '_'), or %q",
			quoteShort(disk), InstallAuto)
	}
	return name, nil
}

// CheckInstall checks an install's disk (InstallDisk) and that wipe
// names its disk: "auto" picks by size among disks without partitions,
// which may still hold data (a whole-disk LUKS or file system), so it
// never wipes.
func CheckInstall(disk string, wipe bool) (string, error) {
	name, err := InstallDisk(disk)
	if err != nil {
		return "", err
	}
	if wipe && name == InstallAuto {
		return "", fmt.Errorf("wipe with disk %q: name the disk to wipe (everything on it is lost)", InstallAuto)
	}
	return name, nil
}
