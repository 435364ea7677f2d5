//go:build !linux

package install

import "os"

func openExclusive(path string) (*os.File, error) { return os.OpenFile(path, os.O_RDWR, 0) }

func dropCache(*os.File) {}

func sameDisk(a, b os.FileInfo) bool { return os.SameFile(a, b) }
