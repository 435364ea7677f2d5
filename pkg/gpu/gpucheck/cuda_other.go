//go:build !cgo || !linux

package gpucheck

// openCUDA reports ErrNoCgo: loading libcuda needs cgo on Linux.
func openCUDA(string) (driver, error) { return nil, ErrNoCgo }
