package sbkeys

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/efivar"
	"github.com/foxboron/go-uefi/pkcs7"
)

// OwnerGUID is the signature owner RigOS writes in its EFI signature
// lists.
const OwnerGUID = "5c1e5e6a-0f3d-4b61-9d2e-7a1c0f9a2b44"

//go:embed microsoft/*.der
var microsoftFS embed.FS

// MicrosoftUEFICAs are Microsoft's UEFI CA certificates that sign GPU and
// NIC option ROMs (see microsoft/SOURCES.md).
func MicrosoftUEFICAs() ([]*x509.Certificate, error) {
	names, err := microsoftFS.ReadDir("microsoft")
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, n := range names {
		der, err := microsoftFS.ReadFile(path.Join("microsoft", n.Name()))
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name(), err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Fingerprint is a certificate's SHA-256, as manifests name db and KEK
// certificates.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// AuthVariables are the signed payloads that enrol a set's keys into a
// firmware in Setup Mode, written in this order: db (RigOS's db
// certificate and extraDB, signed by KEK), KEK (signed by PK), then PK
// (self-signed; writing it ends Setup Mode).
type AuthVariables struct {
	DB, KEK, PK []byte
}

// Authenticated builds the EFI_VARIABLE_AUTHENTICATION_2 payloads for s,
// timestamped at (the build's time, so the payloads are reproducible: the
// signatures carry no signing time).
func Authenticated(s *Set, extraDB []*x509.Certificate, at time.Time) (*AuthVariables, error) {
	db := []*x509.Certificate{s.DB.Cert}
	db = append(db, extraDB...)
	var out AuthVariables
	for _, v := range []struct {
		to     *[]byte
		name   efivar.Efivar
		certs  []*x509.Certificate
		signer Key
	}{
		{&out.DB, efivar.Db, db, s.KEK},
		{&out.KEK, efivar.KEK, []*x509.Certificate{s.KEK.Cert}, s.PK},
		{&out.PK, efivar.PK, []*x509.Certificate{s.PK.Cert}, s.PK},
	} {
		b, err := authenticated(v.name, v.certs, v.signer, at)
		if err != nil {
			return nil, fmt.Errorf("signing %s: %w", v.name.Name, err)
		}
		*v.to = b
	}
	return &out, nil
}

// authenticated is one variable's payload: the authentication descriptor
// (timestamp and PKCS#7 signature over name, vendor GUID, attributes,
// timestamp and data), then the data, an EFI signature list of certs.
func authenticated(v efivar.Efivar, certs []*x509.Certificate, signer Key, at time.Time) ([]byte, error) {
	owner := util.StringToGUID(OwnerGUID)
	sdb := signature.NewSignatureDatabase()
	for _, c := range certs {
		if err := sdb.Append(signature.CERT_X509_GUID, *owner, c.Raw); err != nil {
			return nil, err
		}
	}
	data := sdb.Bytes()

	auth := signature.NewEFIVariableAuthentication2()
	at = at.UTC()
	// Time-based authenticated variables carry whole seconds, no zone.
	auth.Time = util.EFITime{Year: uint16(at.Year()), Month: uint8(at.Month()), Day: uint8(at.Day()),
		Hour: uint8(at.Hour()), Minute: uint8(at.Minute()), Second: uint8(at.Second())}

	var signed bytes.Buffer
	for _, r := range utf16LE(v.Name) {
		signed.WriteByte(r)
	}
	for _, f := range []any{*v.GUID, v.Attributes, auth.Time} {
		if err := binary.Write(&signed, binary.LittleEndian, f); err != nil {
			return nil, err
		}
	}
	signed.Write(data)
	// No authenticated attributes, as sign-efi-sig-list writes them: no
	// signing time, so the same inputs give the same bytes.
	der, err := pkcs7.SignPKCS7(signer.Signer, signer.Cert, pkcs7.OIDData, signed.Bytes(), pkcs7.NoAttr())
	if err != nil {
		return nil, err
	}
	// The descriptor holds the SignedData itself, without ContentInfo.
	cs := cryptobyte.String(der)
	if _, sd, err := pkcs7.ParseContentInfo(&cs); err != nil {
		return nil, err
	} else {
		auth.AuthInfo.CertData = sd
	}
	auth.AuthInfo.Header.Length += uint32(len(auth.AuthInfo.CertData))

	var out bytes.Buffer
	auth.Marshal(&out)
	out.Write(data)
	return out.Bytes(), nil
}

// utf16LE is an ASCII variable name in UTF-16LE, without a terminator.
func utf16LE(s string) []byte {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return b
}
