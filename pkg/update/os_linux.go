package update

import (
	"os"

	"golang.org/x/sys/unix"
)

// openExclusive opens a partition for writing; on a block device O_EXCL
// fails while the kernel holds it, so the slot running under dm-verity
// can never be opened as the one to write.
func openExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
}

// dropCache drops f's cached pages, so reading back reads the disk.
func dropCache(f *os.File) { _ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }
