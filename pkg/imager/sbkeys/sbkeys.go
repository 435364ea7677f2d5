// Package sbkeys manages the Secure Boot keys a RigOS build is signed
// with: PK, KEK and db, RSA-2048 (what UEFI firmware accepts), as PEM
// files in one folder. For development the imager generates them once;
// a release build points at the real keys. Private keys never belong in
// git.
package sbkeys

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Names of the three keys; files are NAME.key and NAME.crt.
var Names = []string{"PK", "KEK", "db"}

// Key is one loaded key pair.
type Key struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// Set is the loaded PK, KEK and db.
type Set struct {
	Dir         string
	PK, KEK, DB Key
}

// Ensure loads the keys in dir, generating any that are missing (for
// development). Generating prints nothing; the caller reports it.
func Ensure(dir, owner string) (*Set, bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	made := false
	for _, n := range Names {
		if _, err := os.Stat(filepath.Join(dir, n+".crt")); errors.Is(err, os.ErrNotExist) {
			if err := generate(dir, n, owner); err != nil {
				return nil, false, err
			}
			made = true
		}
	}
	s, err := Load(dir)
	return s, made, err
}

func generate(dir, name, owner string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("%s %s", owner, name)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(20, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// Load reads PK, KEK and db from dir.
func Load(dir string) (*Set, error) {
	s := &Set{Dir: dir}
	for i, n := range Names {
		k, err := loadKey(dir, n)
		if err != nil {
			return nil, err
		}
		*[]*Key{&s.PK, &s.KEK, &s.DB}[i] = k
	}
	return s, nil
}

func loadKey(dir, name string) (Key, error) {
	cb, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return Key{}, fmt.Errorf("Secure Boot key %s: %w", name, err)
	}
	blk, _ := pem.Decode(cb)
	if blk == nil {
		return Key{}, fmt.Errorf("%s.crt: no PEM certificate", name)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("%s.crt: %w", name, err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return Key{}, fmt.Errorf("Secure Boot key %s: %w", name, err)
	}
	blk, _ = pem.Decode(kb)
	if blk == nil {
		return Key{}, fmt.Errorf("%s.key: no PEM key", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("%s.key: %w", name, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return Key{}, fmt.Errorf("%s.key: not a signing key", name)
	}
	return Key{Cert: cert, Signer: signer}, nil
}

// CertPath returns the PEM certificate file of key name.
func (s *Set) CertPath(name string) string { return filepath.Join(s.Dir, name+".crt") }
