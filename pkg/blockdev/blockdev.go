// Package blockdev finds a node's disks and the disk it booted from, as
// sysfs and the disks' GPTs show them: what init needs to open its
// partitions on the boot disk, and what an install needs to pick a
// target.
package blockdev

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/rigos/rigos/pkg/layout"
)

// Disk is a whole disk as sysfs shows it.
type Disk struct {
	// Name is the kernel's name ("nvme0n1", "sda", "vdb"); its device is
	// /dev/Name.
	Name      string
	Size      int64 // bytes
	ReadOnly  bool
	Removable bool
	// Partitions are the GPT names of its partitions ("" for one
	// without a name).
	Partitions []string
}

// PartitionName is the kernel's name of the disk's partition number n
// (1-based): "vda2", "sdb1", and "nvme0n1p2" for a disk whose name ends
// in a digit.
func (d Disk) PartitionName(n int) string {
	if last := d.Name[len(d.Name)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", d.Name, n)
	}
	return fmt.Sprintf("%s%d", d.Name, n)
}

// Path is the disk's device node.
func (d Disk) Path() string { return "/dev/" + d.Name }

// notDisks are kernel name prefixes of block devices that are not disks
// an install may use.
var notDisks = []string{"loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd"}

// ListDisks lists the whole disks under sysRoot (/sys on a running
// system), by name.
func ListDisks(sysRoot string) ([]Disk, error) {
	dirs, err := filepath.Glob(filepath.Join(sysRoot, "class/block/*"))
	if err != nil {
		return nil, err
	}
	var out []Disk
	for _, dir := range dirs {
		name := filepath.Base(dir)
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
			continue
		}
		if slices.ContainsFunc(notDisks, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		d := Disk{Name: name, Size: readInt(filepath.Join(dir, "size")) * sector,
			ReadOnly: readInt(filepath.Join(dir, "ro")) != 0, Removable: readInt(filepath.Join(dir, "removable")) != 0}
		parts, _ := filepath.Glob(filepath.Join(dir, name+"*", "partition"))
		for _, p := range parts {
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "uevent"))
			d.Partitions = append(d.Partitions, ueventValue(string(b), "PARTNAME"))
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Disk) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

const sector = 512

func readInt(p string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func ueventValue(ev, key string) string {
	for _, l := range strings.Split(ev, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

// BootDisk returns the disk holding RigOS's ESP. A machine with two
// (the stick and an installed disk both attached) cannot tell which
// booted from sysfs alone, so that is an error naming both.
func BootDisk(disks []Disk) (Disk, error) {
	var found []Disk
	for _, d := range disks {
		if slices.Contains(d.Partitions, layout.ESPPartition) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return Disk{}, fmt.Errorf("no disk has a %s partition", layout.ESPPartition)
	case 1:
		return found[0], nil
	}
	return Disk{}, fmt.Errorf("disks %s and %s both hold RigOS: remove the one not in use and try again", found[0].Name, found[1].Name)
}

// ErrAmbiguous: more than one disk holds a partition with the GUID.
var ErrAmbiguous = errors.New("more than one disk holds the partition")

// DiskWithPartition returns the disk, among disks (their nodes under
// devRoot), whose GPT has a partition with the unique GUID id: the
// disk the firmware booted from, given systemd-stub's
// LoaderDevicePartUUID. None is an error; more than one (a cloned disk)
// is ErrAmbiguous.
func DiskWithPartition(devRoot string, disks []Disk, id uuid.UUID) (Disk, error) {
	var found []Disk
	for _, d := range disks {
		if len(d.Partitions) == 0 {
			continue
		}
		ids, err := partitionGUIDs(filepath.Join(devRoot, d.Name))
		if err != nil {
			continue // not GPT, unreadable: not the boot disk
		}
		if slices.Contains(ids, id) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return Disk{}, fmt.Errorf("no disk holds partition %s", id)
	case 1:
		return found[0], nil
	}
	return Disk{}, fmt.Errorf("%w %s: %s and %s", ErrAmbiguous, id, found[0].Name, found[1].Name)
}

// partitionGUIDs reads the unique GUIDs of the partitions in the GPT of
// the disk at path.
func partitionGUIDs(path string) ([]uuid.UUID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	return PartitionGUIDs(f, size)
}
