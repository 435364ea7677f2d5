package install

import (
	"os"

	"golang.org/x/sys/unix"
)

// openExclusive opens a disk for writing; on a block device O_EXCL
// fails while the kernel holds it (mounted, or under device-mapper).
func openExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
}

// dropCache drops f's cached pages, so reading back reads the disk.
func dropCache(f *os.File) { _ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }
