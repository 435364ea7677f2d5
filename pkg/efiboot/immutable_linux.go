package efiboot

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ClearImmutable lifts the immutable flag efivarfs sets on a variable's
// file, so it can be replaced.
func ClearImmutable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	const immutable = 0x10 // FS_IMMUTABLE_FL
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags&^immutable)
}

// Writable runs f with the efivarfs at dir remounted writable, and
// mounts it read-only again after.
func Writable(dir string, f func() error) error {
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("efivarfs", dir, "efivarfs", unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("making EFI variables writable: %w", err)
	}
	err := f()
	if rerr := unix.Mount("efivarfs", dir, "efivarfs", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); rerr != nil && err == nil {
		err = fmt.Errorf("making EFI variables read-only again: %w", rerr)
	}
	return err
}
