// Package modsig reads and writes the signature Linux appends to a
// kernel module: a detached PKCS#7 (CMS) SignedData over the module's
// bytes, a 12-byte module_signature trailer, and the magic string
// "~Module signature appended~\n". The imager signs RigOS's NVIDIA
// modules with it (Debian's kernel trusts the UEFI db for modules, so
// RigOS's db key signs them); init's self-check reads who signed one.
//
// Reading a signature does not verify it: the kernel does that when it
// loads the module. Signer only says which certificate the signature
// names.
package modsig

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// Magic ends every signed module.
const Magic = "~Module signature appended~\n"

// trailerLen is struct module_signature: algo, hash, id_type, signer_len,
// key_id_len (one byte each), three bytes of padding, and the big-endian
// length of the signature before it.
const trailerLen = 12

// idPKCS7 is module_signature.id_type for a PKCS#7 signature, the only
// kind the kernel accepts.
const idPKCS7 = 2

// ErrUnsigned is returned for a module with no appended signature.
var ErrUnsigned = errors.New("module is not signed")

// Split returns the module's bytes without its signature and the PKCS#7
// signature (DER). A module without the magic is ErrUnsigned; a damaged
// trailer is an error.
func Split(mod []byte) (body, sig []byte, err error) {
	if !bytes.HasSuffix(mod, []byte(Magic)) {
		return mod, nil, ErrUnsigned
	}
	rest := mod[:len(mod)-len(Magic)]
	if len(rest) < trailerLen {
		return nil, nil, fmt.Errorf("module signature trailer: %d bytes, want %d", len(rest), trailerLen)
	}
	tr := rest[len(rest)-trailerLen:]
	if tr[2] != idPKCS7 {
		return nil, nil, fmt.Errorf("module signature of type %d, want PKCS#7 (%d)", tr[2], idPKCS7)
	}
	n := binary.BigEndian.Uint32(tr[8:])
	rest = rest[:len(rest)-trailerLen]
	if uint64(n) > uint64(len(rest)) || n == 0 {
		return nil, nil, fmt.Errorf("module signature of %d bytes in a %d-byte module", n, len(rest))
	}
	cut := len(rest) - int(n)
	return rest[:cut], rest[cut:], nil
}

// Sign returns mod (any signature it had removed) signed with key, whose
// certificate is cert: the detached PKCS#7 the kernel verifies, SHA-256,
// without signed attributes or embedded certificates (the kernel finds
// the certificate in its keyrings by issuer and serial number), as
// Linux's sign-file writes it. RSA signatures are deterministic, so the
// same module and key give the same bytes.
func Sign(mod []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	body, _, err := Split(mod)
	if err != nil && !errors.Is(err, ErrUnsigned) {
		return nil, err
	}
	if _, ok := key.Public().(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("signing module: the key is %T, want RSA", key.Public())
	}
	digest := sha256.Sum256(body)
	rsaSig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing module: %w", err)
	}
	sig, err := marshalPKCS7(cert, rsaSig)
	if err != nil {
		return nil, fmt.Errorf("signing module: %w", err)
	}
	out := make([]byte, 0, len(body)+len(sig)+trailerLen+len(Magic))
	out = append(out, body...)
	out = append(out, sig...)
	out = append(out, 0, 0, idPKCS7, 0, 0, 0, 0, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(len(sig)))
	return append(out, Magic...), nil
}

// Signer names the certificate a signed module's signature says it was
// made with (issuer and serial number). It does not check the signature.
type Signer struct {
	Issuer pkix.RDNSequence
	Serial *big.Int
}

// Is reports whether s names cert.
func (s Signer) Is(cert *x509.Certificate) bool {
	var issuer pkix.RDNSequence
	if _, err := asn1.Unmarshal(cert.RawIssuer, &issuer); err != nil {
		return false
	}
	return s.Serial != nil && s.Serial.Cmp(cert.SerialNumber) == 0 && issuer.String() == s.Issuer.String()
}

func (s Signer) String() string {
	return fmt.Sprintf("%s, serial %x", s.Issuer.String(), s.Serial)
}

// The ASN.1 of the PKCS#7 a module carries, as far as Signer reads it.
type contentInfo struct {
	Type    asn1.ObjectIdentifier
	Content asn1.RawValue `asn1:"explicit,tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	ContentInfo      asn1.RawValue
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

// signerInfo is read up to its issuer and serial number; encoding/asn1
// ignores the fields after them.
type signerInfo struct {
	Version         int
	IssuerAndSerial struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
}

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
)

// marshalPKCS7 writes the SignedData as "openssl cms -sign -binary
// -noattr -nocerts -md sha256" does: no content, no certificates, no
// signed attributes, one signer named by issuer and serial number.
func marshalPKCS7(cert *x509.Certificate, rsaSig []byte) ([]byte, error) {
	type algorithm struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.RawValue `asn1:"optional"`
	}
	type issuerAndSerial struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
	type signer struct {
		Version         int
		IssuerAndSerial issuerAndSerial
		DigestAlgorithm algorithm
		SignatureAlg    algorithm
		Signature       []byte
	}
	type data struct{ Type asn1.ObjectIdentifier }
	type signed struct {
		Version          int
		DigestAlgorithms []algorithm `asn1:"set"`
		ContentInfo      data
		SignerInfos      []signer `asn1:"set"`
	}
	sd, err := asn1.Marshal(signed{
		Version:          1,
		DigestAlgorithms: []algorithm{{Algorithm: oidSHA256}},
		ContentInfo:      data{oidData},
		SignerInfos: []signer{{
			Version:         1,
			IssuerAndSerial: issuerAndSerial{asn1.RawValue{FullBytes: cert.RawIssuer}, cert.SerialNumber},
			DigestAlgorithm: algorithm{Algorithm: oidSHA256},
			SignatureAlg:    algorithm{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
			Signature:       rsaSig,
		}},
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(contentInfo{Type: oidSignedData, Content: asn1.RawValue{FullBytes: mustExplicit0(sd)}})
}

// mustExplicit0 wraps DER in an explicit [0] tag.
func mustExplicit0(der []byte) []byte {
	b, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: der})
	return b
}

// ReadSigner returns the signer a module's signature names: ErrUnsigned
// for an unsigned module, an error for one whose signature does not
// parse or names other than one signer.
func ReadSigner(mod []byte) (Signer, error) {
	_, sig, err := Split(mod)
	if err != nil {
		return Signer{}, err
	}
	var ci contentInfo
	if rest, err := asn1.Unmarshal(sig, &ci); err != nil || len(rest) != 0 {
		return Signer{}, fmt.Errorf("module signature is not one PKCS#7 ContentInfo: %v", err)
	}
	if !ci.Type.Equal(oidSignedData) {
		return Signer{}, fmt.Errorf("module signature is PKCS#7 %v, want SignedData", ci.Type)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return Signer{}, fmt.Errorf("module signature's SignedData: %w", err)
	}
	if len(sd.SignerInfos) != 1 {
		return Signer{}, fmt.Errorf("module signature has %d signers, want 1", len(sd.SignerInfos))
	}
	is := sd.SignerInfos[0].IssuerAndSerial
	var issuer pkix.RDNSequence
	if _, err := asn1.Unmarshal(is.Issuer.FullBytes, &issuer); err != nil {
		return Signer{}, fmt.Errorf("module signature's issuer: %w", err)
	}
	if is.Serial == nil {
		return Signer{}, errors.New("module signature names no serial number")
	}
	return Signer{Issuer: issuer, Serial: is.Serial}, nil
}
