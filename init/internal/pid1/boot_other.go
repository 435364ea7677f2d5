//go:build !linux

package pid1

// Main runs init; RigOS's init only runs on Linux.
func Main() { panic("RigOS init runs on Linux only") }
