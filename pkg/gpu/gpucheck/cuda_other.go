//go:build !cgo || !linux

package gpucheck

// openCUDA reports ErrNoCgo: loading libcuda.so.1 needs cgo on Linux.
func openCUDA() (driver, error) { return nil, ErrNoCgo }
