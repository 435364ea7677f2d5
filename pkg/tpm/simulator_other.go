//go:build !cgo

package tpm

import (
	"errors"
	"io"
)

// SimulatorAvailable reports whether this binary was built with the
// go-tpm-tools simulator (it needs cgo).
const SimulatorAvailable = false

// OpenSimulator is unavailable without cgo.
func OpenSimulator(seed int64) (io.ReadWriteCloser, error) {
	return nil, errors.New("TPM simulator not built in (needs cgo)")
}
