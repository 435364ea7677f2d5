package sbkeys

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efivar"
)

// The payloads are well-formed authenticated variables: the descriptor
// parses, the data is an EFI signature list of exactly the expected
// certificates, the timestamp is the build's, and each is signed by the
// key above it (db by KEK, KEK by PK, PK by itself). The same inputs
// give the same bytes.
func TestAuthenticated(t *testing.T) {
	s, _, err := Ensure(t.TempDir(), "RigOS test")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := MicrosoftUEFICAs()
	if err != nil || len(ms) != 2 {
		t.Fatalf("MicrosoftUEFICAs() = %d certificates, %v; want 2", len(ms), err)
	}
	at := time.Date(2026, 11, 27, 12, 0, 5, 999, time.UTC)
	a, err := Authenticated(s, ms, at)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Authenticated(s, ms, at)
	if !bytes.Equal(a.DB, again.DB) || !bytes.Equal(a.PK, again.PK) || !bytes.Equal(a.KEK, again.KEK) {
		t.Error("the same keys and time gave other bytes")
	}
	for _, c := range []struct {
		payload []byte
		v       efivar.Efivar
		signer  Key
		want    []string
	}{
		{a.DB, efivar.Db, s.KEK, []string{Fingerprint(s.DB.Cert), Fingerprint(ms[0]), Fingerprint(ms[1])}},
		{a.KEK, efivar.KEK, s.PK, []string{Fingerprint(s.KEK.Cert)}},
		{a.PK, efivar.PK, s.PK, []string{Fingerprint(s.PK.Cert)}},
	} {
		buf := bytes.NewBuffer(c.payload)
		auth, err := signature.ReadEFIVariableAuthencation2(buf)
		if err != nil {
			t.Fatalf("%s: %v", c.v.Name, err)
		}
		if auth.Time.Year != 2026 || auth.Time.Second != 5 || auth.Time.Nanosecond != 0 {
			t.Errorf("%s: timestamp %+v", c.v.Name, auth.Time)
		}
		data := buf.Bytes()
		db, err := signature.ReadSignatureDatabase(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", c.v.Name, err)
		}
		var got []string
		for _, l := range db {
			for _, sd := range l.Signatures {
				h := sha256.Sum256(sd.Data)
				got = append(got, hex.EncodeToString(h[:]))
			}
		}
		if !slices.Equal(got, c.want) {
			t.Fatalf("%s: certificates %v, want %v", c.v.Name, got, c.want)
		}
		// The signature: over name, GUID, attributes, time and data, by
		// the key above.
		var signed bytes.Buffer
		signed.Write(utf16LE(c.v.Name))
		binary.Write(&signed, binary.LittleEndian, *c.v.GUID)
		binary.Write(&signed, binary.LittleEndian, c.v.Attributes)
		binary.Write(&signed, binary.LittleEndian, auth.Time)
		signed.Write(data)
		digest := sha256.Sum256(signed.Bytes())
		sig := lastOctetString(t, auth.AuthInfo.CertData)
		pub := c.signer.Cert.PublicKey.(*rsa.PublicKey)
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Errorf("%s: not signed by %s over the variable: %v", c.v.Name, c.signer.Cert.Subject.CommonName, err)
		}
		// And by no other key.
		other := s.DB.Cert.PublicKey.(*rsa.PublicKey)
		if rsa.VerifyPKCS1v15(other, crypto.SHA256, digest[:], sig) == nil {
			t.Errorf("%s: the db key's signature verifies too", c.v.Name)
		}
	}
}

// lastOctetString returns the signature in a SignedData without
// authenticated attributes: the RSA signature is the last OCTET STRING
// of the only SignerInfo, which ends the structure.
func lastOctetString(t *testing.T, der []byte) []byte {
	t.Helper()
	// RSA-2048 signature: 256 bytes, encoded as 04 82 01 00 <256 bytes>
	// at the very end of the SignedData.
	const n = 256
	if len(der) < n+4 || !bytes.Equal(der[len(der)-n-4:len(der)-n], []byte{0x04, 0x82, 0x01, 0x00}) {
		t.Fatalf("SignedData does not end with a %d-byte signature", n)
	}
	return der[len(der)-n:]
}
