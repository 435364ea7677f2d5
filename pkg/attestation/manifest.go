package attestation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ManifestVersion is the manifest format this verifier understands.
const ManifestVersion = 1

// MaxManifestSize bounds a signed manifest file.
const MaxManifestSize = 1 << 20

// Manifest names what one RigOS build may measure. The imager writes and
// signs one for every build; the verifier accepts evidence that any
// active manifest accepts.
type Manifest struct {
	Version int       `json:"version"`
	Build   string    `json:"build"` // build identifier shown in verdicts
	Created time.Time `json:"created"`
	// Expires, when set, ends the manifest's life: from then on evidence
	// of this build fails as retired.
	Expires time.Time `json:"expires,omitzero"`
	// BootApplications are the acceptable Authenticode digests of
	// EV_EFI_BOOT_SERVICES_APPLICATION events in PCR 4 (the UKI, and the
	// kernel if the stub loads it as an image). Hex SHA-256.
	BootApplications []string `json:"boot_applications"`
	// PCR11 are the acceptable PCR 11 values (the stub's measurements of
	// the UKI sections). Hex SHA-256.
	PCR11 []string `json:"pcr11"`
	// SecureBoot requirements checked against PCR 7.
	SecureBoot SecureBootPolicy `json:"secure_boot"`
	// EmptyPCRs must be all zeros (PCR 12: command line overrides, PCR 13:
	// system extensions). Default is [12, 13].
	EmptyPCRs []int `json:"empty_pcrs,omitempty"`
	// Phases, when set, is the exact sequence of boot-phase markers the
	// runtime log must start with.
	Phases []string `json:"phases,omitempty"`
	// Inputs, when set, are the exact inputs the image was built from
	// (the Go toolchain, go.mod and go.sum, the pinned Debian packages,
	// the kernel, the CA roots), so that anyone can rebuild the release
	// and compare. Informational: appraisal does not use them, and
	// manifests from before the field parse without it.
	Inputs []BuildInput `json:"inputs,omitempty"`
}

// BuildInput is one input of a build.
type BuildInput struct {
	// Name is a Debian package name, or a file's role ("go.sum",
	// "ca-roots", "vmlinuz") or "go" for the toolchain.
	Name string `json:"name"`
	// Version is the package or toolchain version; empty for a file.
	Version string `json:"version,omitempty"`
	// SHA256 is the hex SHA-256 of the .deb or the file; empty for the
	// toolchain (named by its version).
	SHA256 string `json:"sha256,omitempty"`
}

// SecureBootPolicy is the PCR 7 part of a manifest.
type SecureBootPolicy struct {
	// Required demands SecureBoot=1 and a db authority from DBCerts.
	Required bool `json:"required"`
	// DBCerts are hex SHA-256 fingerprints of the DER db certificates
	// allowed to have verified the UKI. With Required, db may hold these
	// certificates and those in OtherDBCerts, nothing else: every db entry
	// can sign boot images and (Debian kernels trust db for modules)
	// kernel modules.
	DBCerts []string `json:"db_certs"`
	// OtherDBCerts are further db certificates that may be present but
	// never count as having verified the UKI (for example a platform's
	// option-ROM CA). Hex SHA-256 of the DER.
	OtherDBCerts []string `json:"other_db_certs,omitempty"`
	// KEKCerts, when set, are the only certificates KEK may hold (a KEK
	// key can rewrite db). Hex SHA-256 of the DER.
	KEKCerts []string `json:"kek_certs,omitempty"`
}

// Validate reports every problem in m.
func (m *Manifest) Validate() error {
	var errs []error
	if m.Version != ManifestVersion {
		errs = append(errs, fmt.Errorf("version %d, want %d", m.Version, ManifestVersion))
	}
	if m.Build == "" {
		errs = append(errs, errors.New("build is empty"))
	}
	if len(m.BootApplications) == 0 {
		errs = append(errs, errors.New("boot_applications is empty"))
	}
	if len(m.PCR11) == 0 {
		errs = append(errs, errors.New("pcr11 is empty"))
	}
	check := func(field string, list []string) {
		for _, h := range list {
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				errs = append(errs, fmt.Errorf("%s: %q is not a hex SHA-256 digest", field, h))
			}
		}
	}
	check("boot_applications", m.BootApplications)
	check("pcr11", m.PCR11)
	check("secure_boot.db_certs", m.SecureBoot.DBCerts)
	check("secure_boot.other_db_certs", m.SecureBoot.OtherDBCerts)
	check("secure_boot.kek_certs", m.SecureBoot.KEKCerts)
	for i, in := range m.Inputs {
		if in.Name == "" {
			errs = append(errs, fmt.Errorf("inputs[%d]: name is empty", i))
		}
		if in.Version == "" && in.SHA256 == "" {
			errs = append(errs, fmt.Errorf("inputs[%d] (%s): neither version nor sha256", i, in.Name))
		}
		if in.SHA256 != "" {
			check(fmt.Sprintf("inputs[%d].sha256", i), []string{in.SHA256})
		}
	}
	if m.SecureBoot.Required && len(m.SecureBoot.DBCerts) == 0 {
		errs = append(errs, errors.New("secure_boot.required without db_certs"))
	}
	for _, p := range m.EmptyPCRs {
		if p < 0 || p > 23 {
			errs = append(errs, fmt.Errorf("empty_pcrs: %d is not a PCR", p))
		}
	}
	return errors.Join(errs...)
}

// Retirement says which builds a verifier no longer accepts.
type Retirement struct {
	// Builds are retired by name.
	Builds []string
	// MinCreated retires every build created before it (the fleet's
	// minimum build); zero retires none.
	MinCreated time.Time
}

// Retired says why m is retired at now, or "" if it is active.
func (r Retirement) Retired(m *Manifest, now time.Time) string {
	switch {
	case slices.Contains(r.Builds, m.Build):
		return "build " + m.Build + " is retired"
	case m.Created.Before(r.MinCreated):
		return fmt.Sprintf("build %s (created %s) is older than the minimum build (%s)", m.Build,
			m.Created.UTC().Format(time.RFC3339), r.MinCreated.UTC().Format(time.RFC3339))
	case !m.Expires.IsZero() && !now.Before(m.Expires):
		return fmt.Sprintf("build %s's manifest expired at %s", m.Build, m.Expires.UTC().Format(time.RFC3339))
	}
	return ""
}

func (m *Manifest) emptyPCRs() []int {
	if m.EmptyPCRs == nil {
		return []int{12, 13}
	}
	return m.EmptyPCRs
}

// signedManifest is the file format: the manifest's exact JSON bytes and
// an Ed25519 signature over them.
type signedManifest struct {
	Payload   []byte `json:"payload"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// KeyID names a manifest signing key: the first 8 bytes of SHA-256 of
// the public key, in hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// SignManifest validates m and returns the signed file contents.
func SignManifest(m *Manifest, key ed25519.PrivateKey) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("invalid manifest: %w", err)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	out, err := json.MarshalIndent(signedManifest{
		Payload: payload, KeyID: KeyID(pub), Signature: ed25519.Sign(key, payload),
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ErrManifestSignature is wrapped when no trusted key signed a manifest.
var ErrManifestSignature = errors.New("manifest signature does not verify with a trusted key")

// ParseManifest verifies a signed manifest against the trusted keys and
// decodes it strictly (unknown fields are errors).
func ParseManifest(b []byte, keys []ed25519.PublicKey) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes exceeds %d", len(b), MaxManifestSize)
	}
	var sm signedManifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sm); err != nil {
		return nil, fmt.Errorf("decoding signed manifest: %w", err)
	}
	ok := false
	for _, k := range keys {
		if KeyID(k) == sm.KeyID && ed25519.Verify(k, sm.Payload, sm.Signature) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w (key id %q)", ErrManifestSignature, sm.KeyID)
	}
	var m Manifest
	dec = json.NewDecoder(bytes.NewReader(sm.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding manifest: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("invalid manifest: %w", err)
	}
	for _, l := range [][]string{m.BootApplications, m.PCR11, m.SecureBoot.DBCerts} {
		for i := range l {
			l[i] = strings.ToLower(l[i])
		}
	}
	return &m, nil
}

func containsHex(list []string, b []byte) bool {
	return slices.Contains(list, hex.EncodeToString(b))
}
