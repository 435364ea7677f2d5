//go:build cgo

// Package tpmsim starts the go-tpm-tools TPM simulator (cgo builds only),
// for tests and development builds.
package tpmsim

import (
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/simulator"
)

// Available reports whether this binary was built with the
// go-tpm-tools simulator (it needs cgo).
const Available = true

// Open starts the process-wide go-tpm-tools TPM simulator with a
// fixed seed, so its EK is stable across runs of the same seed. The
// simulator is a singleton: close it before opening it again.
func Open(seed int64) (io.ReadWriteCloser, error) {
	s, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("starting TPM simulator: %w", err)
	}
	return s, nil
}
