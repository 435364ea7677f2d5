// Package ekroots is the verifier's built-in bundle of TPM manufacturers'
// endorsement-key CA certificates: Infineon, Nuvoton, STMicroelectronics,
// Intel (PTT), AMD (fTPM, Pluton), Microsoft Pluton, NSING and Nationz.
// SOURCES.md says where each certificate comes from and its fingerprint.
//
// The bundle only decides the trust class of an EK (hardware or dev); it
// does not vouch that a TPM is free of known flaws, and it holds no
// revocation lists.
package ekroots

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"io/fs"
	"path"
	"sort"
)

//go:embed certs SOURCES.md
var files embed.FS

// Role says where a certificate sits in its chain.
type Role string

// Roles.
const (
	// Root is a trust anchor: self-signed, or the top of what its vendor
	// publishes.
	Root Role = "roots"
	// Intermediate chains to a Root of the bundle.
	Intermediate Role = "intermediates"
)

// Cert is one bundled certificate.
type Cert struct {
	File string // path under certs/, e.g. "roots/IFX_infineon-optiga-rsa-root-ca.pem"
	Role Role
	*x509.Certificate
}

// Certificates returns every bundled certificate, sorted by file.
func Certificates() ([]Cert, error) {
	var out []Cert
	for _, role := range []Role{Root, Intermediate} {
		dir := path.Join("certs", string(role))
		entries, err := fs.ReadDir(files, dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			b, err := files.ReadFile(path.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			blk, rest := pem.Decode(b)
			if blk == nil || blk.Type != "CERTIFICATE" || len(rest) != 0 {
				return nil, fmt.Errorf("%s/%s: want exactly one PEM certificate", role, e.Name())
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", role, e.Name(), err)
			}
			out = append(out, Cert{File: path.Join(string(role), e.Name()), Role: role, Certificate: c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

// Pools returns the bundled roots and intermediates, for
// attestation.AppraiseEK.
func Pools() (roots, intermediates *x509.CertPool, err error) {
	certs, err := Certificates()
	if err != nil {
		return nil, nil, err
	}
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	for _, c := range certs {
		if c.Role == Root {
			roots.AddCert(c.Certificate)
		} else {
			intermediates.AddCert(c.Certificate)
		}
	}
	return roots, intermediates, nil
}

// Sources returns SOURCES.md, the table of where each certificate comes
// from.
func Sources() []byte {
	b, _ := files.ReadFile("SOURCES.md") // embedded: cannot fail
	return b
}
