//go:build cgo

package tpm

import (
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/simulator"
)

// SimulatorAvailable reports whether this binary was built with the
// go-tpm-tools simulator (it needs cgo).
const SimulatorAvailable = true

// OpenSimulator starts the process-wide go-tpm-tools TPM simulator with a
// fixed seed, so its EK is stable across runs of the same seed. The
// simulator is a singleton: close it before opening it again.
func OpenSimulator(seed int64) (io.ReadWriteCloser, error) {
	s, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("starting TPM simulator: %w", err)
	}
	return s, nil
}
