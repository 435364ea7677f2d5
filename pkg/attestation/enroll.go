package attestation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"github.com/google/go-attestation/attest"
)

// TrustClass says how far an EK can be trusted.
type TrustClass string

// Trust classes.
const (
	// ClassDev is any EK without a certificate chaining to a configured
	// manufacturer root: software TPMs (swtpm, the simulator) and
	// unknown vendors. Dev nodes never reach the hardware tier.
	ClassDev TrustClass = "dev"
	// ClassHardware is an EK certified by a configured manufacturer root.
	ClassHardware TrustClass = "hardware"
)

// EK is an appraised endorsement key.
type EK struct {
	Public      crypto.PublicKey
	DER         []byte // PKIX
	Fingerprint string // hex SHA-256 of DER: the node's hardware identity
	Class       TrustClass
	Certificate *x509.Certificate
	TPM         TPMInfo // from the certificate, when it says
	// Reason says why a ClassDev EK is not hardware-class; empty for
	// ClassHardware.
	Reason string
}

// Reasons an EK is dev-class.
const (
	ReasonNoCertificate = "no EK certificate in NV (firmware TPMs such as Intel PTT keep theirs at the vendor's online service, which RigOS does not fetch yet)"
	ReasonNoRoots       = "no EK roots configured"
	ReasonSoftware      = "EK certificate names a software TPM"
	ReasonUnknownCA     = "EK certificate does not chain to a known TPM manufacturer root"
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Fingerprint is an EK's identity: the hex SHA-256 of its PKIX DER.
func Fingerprint(ekDER []byte) string {
	sum := sha256.Sum256(ekDER)
	return hex.EncodeToString(sum[:])
}

// AppraiseEK parses the EK public key and, when present, its certificate.
// The EK is ClassHardware only if the certificate's key is the EK, the
// certificate chains to one of roots (intermediates may be given), and it
// does not name a software TPM (swtpm).
// A certificate that does not chain leaves the EK in ClassDev; a
// certificate for another key is an error.
func AppraiseEK(ekDER, certDER []byte, roots, intermediates *x509.CertPool, now time.Time) (EK, error) {
	pub, err := x509.ParsePKIXPublicKey(ekDER)
	if err != nil {
		return EK{}, fail(CheckEK, "parsing EK public key: %v", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return EK{}, fail(CheckEK, "RSA EK of %d bits", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return EK{}, fail(CheckEK, "unsupported EK type %T", pub)
	}
	ek := EK{Public: pub, DER: ekDER, Fingerprint: Fingerprint(ekDER), Class: ClassDev}
	if len(certDER) == 0 {
		ek.Reason = ReasonNoCertificate
		return ek, nil
	}
	cert, err := attest.ParseEKCertificate(certDER)
	if err != nil {
		return EK{}, fail(CheckEK, "parsing EK certificate: %v", err)
	}
	certKey, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || subtle.ConstantTimeCompare(certKey, ekDER) != 1 {
		return EK{}, fail(CheckEK, "EK certificate is for another key")
	}
	ek.Certificate = cert
	if info, err := ParseTPMInfo(cert); err == nil {
		ek.TPM = info
	}
	switch {
	case ek.TPM.IsSoftware():
		ek.Reason = ReasonSoftware + " (" + ek.TPM.Model + ")"
		return ek, nil // a software TPM stays dev, whoever certified it
	case roots == nil:
		ek.Reason = ReasonNoRoots
		return ek, nil
	}
	// EK certificates carry the TPM's identity in a critical subject
	// alternative name Go does not interpret.
	c := *cert
	c.UnhandledCriticalExtensions = nil
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, oid)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		ek.Reason = ReasonUnknownCA + ": " + err.Error()
	} else {
		ek.Class = ClassHardware
	}
	return ek, nil
}

// Credential is a TPM2_MakeCredential challenge for one EK and AK.
type Credential struct {
	Blob   []byte // TPM2B_ID_OBJECT
	Secret []byte // TPM2B_ENCRYPTED_SECRET
}

// MakeCredential checks the AK (VerifyAK) and encrypts a fresh secret that
// only the TPM holding both ek and the AK can recover with
// TPM2_ActivateCredential. rnd may be nil (crypto/rand).
func MakeCredential(ek crypto.PublicKey, ak AKParams, rnd io.Reader) (secret []byte, cred Credential, err error) {
	if err := VerifyAK(ak); err != nil {
		return nil, Credential{}, err
	}
	ap := attest.ActivationParameters{EK: ek, Rand: rnd, AK: attest.AttestationParameters{
		Public: ak.Public, CreateData: ak.CreateData,
		CreateAttestation: ak.CreateAttestation, CreateSignature: ak.CreateSignature,
	}}
	secret, ec, err := ap.Generate()
	if err != nil {
		return nil, Credential{}, fail(CheckActivation, "making credential: %v", err)
	}
	return secret, Credential{Blob: ec.Credential, Secret: ec.Secret}, nil
}

// ErrActivation is returned when the agent's activated secret differs.
var ErrActivation = errors.New("activated secret does not match: the AK is not in the TPM that holds this EK")

// VerifyActivation compares the expected and returned secrets in constant
// time.
func VerifyActivation(want, got []byte) error {
	if len(want) == 0 || subtle.ConstantTimeCompare(want, got) != 1 {
		return &CheckError{Check: CheckActivation, Err: ErrActivation}
	}
	return nil
}
