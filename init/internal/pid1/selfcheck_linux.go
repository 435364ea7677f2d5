package pid1

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/layout"
)

func (realProbe) MountDebugfs() bool {
	dir := layout.DebugfsProbe
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false
	}
	if err := unix.Mount("debugfs", dir, "debugfs", 0, ""); err != nil {
		return false
	}
	_ = unix.Unmount(dir, 0)
	return true
}
