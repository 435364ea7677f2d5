//go:build !linux

package update

import "os"

func openExclusive(path string) (*os.File, error) { return os.OpenFile(path, os.O_RDWR, 0) }

func dropCache(*os.File) {}
