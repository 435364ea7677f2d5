//go:build sim

package cli

import (
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/attestation"
)

// devManifests, in a development build (-tags sim), is the simulated
// measured boot's manifest, so an agent on the TPM simulator can be
// trusted by a development verifier.
func devManifests() []*attestation.Manifest {
	return []*attestation.Manifest{devboot.Manifest(devboot.Default(), SimulatedBuild)}
}

// SimulatedBuild names the simulated boot's manifest.
const SimulatedBuild = "dev-simulated"
