package pid1

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// sysfs reads the kernel's view of the devices from a sysfs tree: the
// real one at /sys on a booted system (newSysfs), a folder a test fills
// in with the files init reads.
type sysfs struct {
	root string
	// disk, when set, is the boot disk's kernel name: partitions are
	// looked for on it alone.
	disk string
}

// sysRoot is where init mounts sysfs.
const sysRoot = "/sys"

// newSysfs returns the sysfs at root; an empty root means sysRoot.
func newSysfs(root string) sysfs {
	if root == "" {
		root = sysRoot
	}
	return sysfs{root: root}
}

// findPartition returns "MAJOR:MINOR" of the partition with the GPT name,
// waiting up to wait for the kernel to scan the disks (it looks once when
// wait is 0).
func (s sysfs) findPartition(name string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		if num, ok := s.lookupPartition(name); ok {
			return num, nil
		}
		if time.Now().After(deadline) {
			if s.disk != "" {
				return "", fmt.Errorf("no partition named %s on the boot disk %s", name, s.disk)
			}
			return "", fmt.Errorf("no partition named %s", name)
		}
		time.Sleep(100 * time.Millisecond) // waiting for the partition scan, bounded
	}
}

// lookupPartition looks once for the partition with the GPT name among
// the block devices.
func (s sysfs) lookupPartition(name string) (string, bool) {
	pattern := "class/block/*/uevent"
	if s.disk != "" {
		pattern = "class/block/" + s.disk + "/*/uevent" // the disk's partitions are folders in its own
	}
	files, _ := filepath.Glob(filepath.Join(s.root, pattern))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ev := uevent(b)
		if n, ok := ev["PARTNAME"]; ok && n == name { // a whole disk has no PARTNAME
			return ev["MAJOR"] + ":" + ev["MINOR"], true
		}
	}
	return "", false
}

// blockDevice returns the /dev path of the block device "MAJOR:MINOR".
func (s sysfs) blockDevice(num string) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "dev/block", num, "uevent"))
	if err != nil {
		return "", err
	}
	if name, ok := uevent(b)["DEVNAME"]; ok {
		return "/dev/" + name, nil
	}
	return "", fmt.Errorf("block device %s has no name", num)
}

// deviceAliases reads the modalias of every device on every bus.
func (s sysfs) deviceAliases() []string {
	files, _ := filepath.Glob(filepath.Join(s.root, "bus/*/devices/*/modalias"))
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}

// uevent parses a sysfs uevent file: KEY=value lines.
func uevent(b []byte) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}
