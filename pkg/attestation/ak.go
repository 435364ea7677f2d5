package attestation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// AKParams are the AK's public area and its TPM creation proof.
type AKParams struct {
	Public            []byte // TPMT_PUBLIC
	CreateData        []byte // TPMS_CREATION_DATA
	CreateAttestation []byte // TPMS_ATTEST
	CreateSignature   []byte // TPMT_SIGNATURE
}

// Minimum AK strengths.
const (
	MinRSABits = 2048
)

// ParseAKPublic decodes a TPMT_PUBLIC and returns the public key.
func ParseAKPublic(public []byte) (*tpm2.TPMTPublic, crypto.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding AK public area: %w", err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding AK public key: %w", err)
	}
	return pub, key, nil
}

// VerifyAK verifies that an AK can only be a TPM attestation key: the TPM
// generated it (sensitiveDataOrigin), it can never leave the TPM
// (fixedTPM, fixedParent), it signs only TPM-generated structures
// (restricted, sign, not decrypt), its key is strong enough, and the
// creation attestation is the TPM's, signed by the AK itself over this
// very public area.
func VerifyAK(p AKParams) error {
	pub, key, err := ParseAKPublic(p.Public)
	if err != nil {
		return &CheckError{Check: CheckAK, Err: err}
	}
	a := pub.ObjectAttributes
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{a.FixedTPM, "fixedTPM is not set: the key can be duplicated off the TPM"},
		{a.FixedParent, "fixedParent is not set"},
		{a.SensitiveDataOrigin, "sensitiveDataOrigin is not set: the private key was imported"},
		{a.Restricted, "restricted is not set: the key can sign arbitrary data"},
		{a.SignEncrypt, "sign is not set"},
		{!a.Decrypt, "decrypt is set: an AK must be sign-only"},
	} {
		if !c.ok {
			return fail(CheckAK, "%s", c.what)
		}
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 && pub.NameAlg != tpm2.TPMAlgSHA384 && pub.NameAlg != tpm2.TPMAlgSHA512 {
		return fail(CheckAK, "name algorithm %v is too weak", pub.NameAlg)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fail(CheckAK, "RSA key of %d bits, want at least %d", k.N.BitLen(), MinRSABits)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
			return fail(CheckAK, "ECC curve %s not accepted", k.Curve.Params().Name)
		}
	default:
		return fail(CheckAK, "unsupported key type %T", key)
	}
	ap := attest.ActivationParameters{AK: attest.AttestationParameters{
		Public: p.Public, CreateData: p.CreateData,
		CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature,
	}}
	if err := ap.CheckAKParameters(); err != nil {
		return &CheckError{Check: CheckAK, Err: fmt.Errorf("creation proof: %w", err)}
	}
	return nil
}
