// Package uki builds unified kernel images: systemd-stub with the kernel,
// initrd, command line and os-release as PE sections, made bit-for-bit
// reproducible, signed for Secure Boot, and with the PCR 4 and PCR 11
// values the boot will produce predicted.
package uki

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/foxboron/go-uefi/authenticode"
	"github.com/foxboron/go-uefi/pkcs7"
)

// DefaultStub is systemd-stub from Debian's systemd-boot-efi package.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// Section is one UKI payload section.
type Section struct {
	Name string // ".linux", ".osrel", ".cmdline", ".initrd"
	Data []byte
}

// measureOrder is the order systemd-stub (252) measures sections into
// PCR 11, whatever their order in the file.
var measureOrder = []string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// Measured reports whether systemd-stub measures a section of this name.
func Measured(name string) bool { return slices.Contains(measureOrder, name) }

// PredictPCR11 returns the SHA-256 PCR 11 value after systemd-stub
// measured sections: for each present section in measureOrder, its name
// (with the NUL) and then its contents.
func PredictPCR11(sections []Section) []byte {
	pcr := make([]byte, sha256.Size)
	extend := func(data []byte) {
		d := sha256.Sum256(data)
		h := sha256.New()
		h.Write(pcr)
		h.Write(d[:])
		pcr = h.Sum(nil)
	}
	for _, name := range measureOrder {
		for _, s := range sections {
			if s.Name == name {
				extend(append([]byte(name), 0))
				extend(s.Data)
			}
		}
	}
	return pcr
}

// Assemble adds sections to stub with objcopy and returns the unsigned
// UKI with its PE timestamp and checksum zeroed, so that the same inputs
// always give the same bytes.
func Assemble(stub string, sections []Section, tmp string) ([]byte, error) {
	f, err := pe.Open(stub)
	if err != nil {
		return nil, fmt.Errorf("reading stub %s: %w", stub, err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		f.Close()
		return nil, errors.New("stub is not a PE32+ image")
	}
	var end uint64
	for _, s := range f.Sections {
		end = max(end, uint64(s.VirtualAddress)+uint64(s.VirtualSize))
	}
	f.Close()
	align := uint64(oh.SectionAlignment)
	next := func(size int) uint64 {
		v := (end + align - 1) &^ (align - 1)
		end = v + uint64(size)
		return v
	}
	args := []string{}
	for i, s := range sections {
		p := filepath.Join(tmp, fmt.Sprintf("section-%d", i))
		if err := os.WriteFile(p, s.Data, 0o600); err != nil {
			return nil, err
		}
		vma := oh.ImageBase + next(len(s.Data))
		args = append(args, "--add-section", s.Name+"="+p, "--change-section-vma", fmt.Sprintf("%s=0x%x", s.Name, vma))
	}
	out := filepath.Join(tmp, "uki.efi")
	args = append(args, stub, out)
	if b, err := exec.Command("objcopy", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("objcopy: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return zeroStamps(b)
}

// zeroStamps clears the COFF TimeDateStamp and the optional header
// CheckSum, which objcopy fills from the clock and contents.
func zeroStamps(b []byte) ([]byte, error) {
	if len(b) < 0x40 {
		return nil, errors.New("UKI too short")
	}
	off := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if off+24+68 > len(b) || string(b[off:off+4]) != "PE\x00\x00" {
		return nil, errors.New("UKI has no PE header")
	}
	binary.LittleEndian.PutUint32(b[off+8:], 0)     // TimeDateStamp
	binary.LittleEndian.PutUint32(b[off+24+64:], 0) // CheckSum
	return b, nil
}

// AuthenticodeDigest returns the SHA-256 Authenticode digest of a PE
// image: what UEFI firmware measures into PCR 4 when it starts it. It is
// the same for the image signed and unsigned.
func AuthenticodeDigest(img []byte) ([]byte, error) {
	p, err := authenticode.Parse(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("parsing PE image: %w", err)
	}
	return p.Hash(crypto.SHA256), nil
}

// Sign signs a PE image for Secure Boot with key and cert. The signature
// carries no signing time, so signing is deterministic for RSA keys.
func Sign(img []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	p, err := authenticode.Parse(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("parsing PE image: %w", err)
	}
	if _, err := p.Sign(key, cert, pkcs7.NoAttr()); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return p.Bytes(), nil
}
