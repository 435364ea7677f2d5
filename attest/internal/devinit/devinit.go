// Package devinit writes a complete development setup into a folder: TLS
// material, the result-token and manifest signing keys, the reference
// manifests it is given, signed, and configs for attest and for an agent
// on the TPM simulator (which only a development build, -tags sim, runs).
// It is what `make demo` runs on.
package devinit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rigos/rigos/attest/internal/pki"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/keyfile"
)

// Options for Write.
type Options struct {
	Dir    string
	Listen string // verifier address, e.g. "127.0.0.1:7443"
	NodeID string
	// SpotMean etc. are Go durations for the demo's spot checks.
	SpotMean, SpotMin, SpotMax, Deadline string
	// ManifestKeys are further manifest signing keys (PEM) to trust, such
	// as the imager's.
	ManifestKeys []string
	// Manifests are signed with the setup's manifest key and written to
	// its manifest folder (the simulated boot's, in a development build).
	Manifests []*attestation.Manifest
}

// Write creates the setup. Existing files are overwritten.
func Write(o Options) error {
	if err := os.MkdirAll(filepath.Join(o.Dir, "manifests"), 0o700); err != nil {
		return err
	}
	t, err := pki.NewTLS("127.0.0.1", "localhost", "10.0.2.2")
	if err != nil {
		return err
	}
	tokPriv, tokPub, err := keyfile.NewEd25519()
	if err != nil {
		return err
	}
	manPriv, manPub, err := keyfile.NewEd25519()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt": t.CACert, "server.crt": t.ServerCert, "server.key": t.ServerKey,
		"token.key": tokPriv, "token.pub": tokPub, "manifest.key": manPriv, "manifest.pub": manPub,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(o.Dir, name), b, 0o600); err != nil {
			return err
		}
	}
	key, err := keyfile.ReadEd25519Private(filepath.Join(o.Dir, "manifest.key"))
	if err != nil {
		return err
	}
	for _, m := range o.Manifests {
		signed, err := attestation.SignManifest(m, key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.Dir, "manifests", m.Build+".json"), signed, 0o600); err != nil {
			return err
		}
	}
	attest := map[string]any{
		"listen": o.Listen, "admin_socket": "admin.sock", "tls_cert": "server.crt", "tls_key": "server.key",
		"database": "attest.db", "signing_key": "token.key", "manifest_dir": "manifests",
		"manifest_keys": append([]string{"manifest.pub"}, o.ManifestKeys...), "allow_dev": true,
		"spot_check": map[string]string{"mean": o.SpotMean, "min": o.SpotMin, "max": o.SpotMax, "deadline": o.Deadline},
	}
	agent := map[string]any{
		"node_id": o.NodeID, "verifier": o.Listen, "ca_cert": "ca.crt", "tpm": "simulator",
		"simulator_seed": 1, "state_dir": "agent-state", "runtime_log": "agent-state/runtime.cel",
	}
	for name, v := range map[string]any{"attest.json": attest, "agent.json": agent} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.Dir, name), append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}
