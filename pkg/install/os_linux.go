package install

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openExclusive opens a disk for writing; on a block device O_EXCL
// fails while the kernel holds it (mounted, or under device-mapper).
func openExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
}

// dropCache drops f's cached pages, so reading back reads the disk.
func dropCache(f *os.File) { _ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }

// sameDisk reports whether a and b are the same disk: the same device
// number for device nodes (two nodes, even in other folders, can name
// one disk), the same file otherwise.
func sameDisk(a, b os.FileInfo) bool {
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	if okA && okB && a.Mode()&os.ModeDevice != 0 && b.Mode()&os.ModeDevice != 0 {
		return sa.Rdev == sb.Rdev
	}
	return os.SameFile(a, b)
}
