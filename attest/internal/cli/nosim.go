//go:build !sim

package cli

import "github.com/rigos/rigos/pkg/attestation"

// devManifests are the reference manifests devinit signs besides the
// image builds' own: none in a production build (the simulated boot's
// manifest comes only with -tags sim).
func devManifests() []*attestation.Manifest { return nil }
