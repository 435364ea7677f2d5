// Package devboot simulates the measured boot of a RigOS unified kernel
// image (UKI) by UEFI firmware and systemd-stub: it produces the firmware
// event log and the PCR values a real boot would leave, and can extend
// them into a TPM (the go-tpm-tools simulator or a software TPM).
//
// It exists for development, tests and load generation, where no firmware
// runs. The layout follows what OVMF and systemd-stub log: PCR 0-3, 5, 6
// firmware events; PCR 7 Secure Boot variables and the authority that
// verified the UKI; PCR 4 the UKI as a boot-services application; PCR 11
// each UKI section (name, then content). It never touches a TPM:
// simnode extends the log into the simulator.
//
// Not guaranteed: the "Authenticode digest" of the simulated UKI is
// SHA-256 over its sections, not a real PE hash.
package devboot

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"
	"unicode/utf16"

	"github.com/rigos/rigos/internal/sim/tcglog"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/attestation/tcgevent"
	"github.com/rigos/rigos/pkg/measure"
)

// Section is one PE section of a UKI measured by systemd-stub.
type Section struct {
	Name    string
	Content []byte
}

// Config describes the simulated machine and image.
type Config struct {
	// Firmware identifies the motherboard firmware; it changes PCR 0.
	Firmware string
	// Sections of the UKI, in measurement order.
	Sections []Section
	// SecureBoot is the SecureBoot variable's value.
	SecureBoot bool
	// Keys enrolled in PK, KEK and db; Signer is the db certificate that
	// verified the UKI (logged as the authority in PCR 7).
	PK, KEK, DB, Signer *x509.Certificate
	// ExtraDB and ExtraKEK are further certificates enrolled in db and KEK.
	ExtraDB, ExtraKEK []*x509.Certificate
	// DebugMode logs the "UEFI Debug Mode" action in PCR 7.
	DebugMode bool
	// Extra events logged and extended after the stub's (for example a
	// command line override the stub measures into PCR 12).
	Extra []Extra
}

// Extra is one additional logged event.
type Extra struct {
	PCR  int
	Type uint32
	Data []byte
	// Digest, if set, is extended instead of Data's SHA-256 (a log whose
	// data does not match what was measured).
	Digest []byte
}

// GlobalVar encodes a UEFI_VARIABLE_DATA event for an EFI global
// variable (BootOrder, Boot####), as firmware logs boot variables.
func GlobalVar(name string, data []byte) []byte { return efiVar(globalVar, name, data) }

// Boot is the outcome of a simulated boot.
type Boot struct {
	Log       *tcglog.Log
	UKIDigest []byte // PCR 4 application event digest
}

// Default returns the configuration of a genuine RigOS development boot.
func Default() Config {
	pk, kek, db := DevKeys()
	return Config{
		Firmware: "RigOS dev firmware 1.0",
		Sections: []Section{
			{".linux", []byte("rigos dev kernel")},
			{".osrel", []byte("ID=rigos\nVERSION_ID=dev\n")},
			{".cmdline", []byte("lockdown=confidentiality module.sig_enforce=1")},
			{".initrd", []byte("rigos dev initrd")},
		},
		SecureBoot: true,
		PK:         pk, KEK: kek, DB: db, Signer: db,
	}
}

// UKIDigest is the simulated Authenticode digest of a UKI with sections.
func UKIDigest(sections []Section) []byte {
	h := sha256.New()
	for _, s := range sections {
		fmt.Fprintf(h, "%s\x00%d\x00", s.Name, len(s.Content))
		h.Write(s.Content)
	}
	return h.Sum(nil)
}

// PCR11 predicts PCR 11 after systemd-stub measured sections.
func PCR11(sections []Section) []byte {
	l := tcglog.New()
	measureSections(l, sections)
	return l.PCR(11)
}

func measureSections(l *tcglog.Log, sections []Section) {
	for _, s := range sections {
		l.Measure(11, tcgevent.EvIPL, append([]byte(s.Name), 0))
		d := sha256.Sum256(s.Content)
		l.Append(11, tcgevent.EvIPL, d[:], []byte(s.Name))
	}
}

// Simulate produces the event log of one boot with cfg.
func Simulate(cfg Config) Boot {
	l := tcglog.New()
	sep := []byte{0, 0, 0, 0}
	l.Append(0, tcgevent.EvNoAction, nil, append([]byte("StartupLocality\x00"), 0))
	l.Measure(0, tcgevent.EvSCRTMVersion, utf16z(cfg.Firmware))
	l.Measure(0, tcgevent.EvEFIPlatformFirmwareBlb, []byte(cfg.Firmware+" volume"))
	l.Measure(1, tcgevent.EvEFIVariableBoot, efiVar(globalVar, "BootOrder", []byte{1, 0}))
	l.Measure(7, tcgevent.EvEFIVariableDriverCfg, efiVar(globalVar, "SecureBoot", []byte{boolByte(cfg.SecureBoot)}))
	l.Measure(7, tcgevent.EvEFIVariableDriverCfg, efiVar(globalVar, "PK", sigList(cfg.PK)))
	l.Measure(7, tcgevent.EvEFIVariableDriverCfg, efiVar(globalVar, "KEK", sigLists(append([]*x509.Certificate{cfg.KEK}, cfg.ExtraKEK...))))
	l.Measure(7, tcgevent.EvEFIVariableDriverCfg, efiVar(imageSecurityDB, "db", sigLists(append([]*x509.Certificate{cfg.DB}, cfg.ExtraDB...))))
	l.Measure(7, tcgevent.EvEFIVariableDriverCfg, efiVar(imageSecurityDB, "dbx", nil))
	if cfg.DebugMode {
		l.Measure(7, tcgevent.EvEFIAction, []byte("UEFI Debug Mode"))
	}
	for _, pcr := range []int{0, 1, 2, 3, 5, 6, 7} {
		l.Measure(pcr, tcgevent.EvSeparator, sep)
	}
	l.Measure(4, tcgevent.EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	l.Measure(4, tcgevent.EvSeparator, sep)
	if cfg.SecureBoot && cfg.Signer != nil {
		l.Measure(7, tcgevent.EvEFIVariableAuthority, efiVar(imageSecurityDB, "db", sigData(cfg.Signer)))
	}
	uki := UKIDigest(cfg.Sections)
	l.Append(4, tcgevent.EvEFIBootServicesApp, uki, []byte("\\EFI\\BOOT\\BOOTX64.EFI"))
	measureSections(l, cfg.Sections)
	for _, e := range cfg.Extra {
		if e.Digest != nil {
			l.Append(e.PCR, e.Type, e.Digest, e.Data)
			continue
		}
		l.Measure(e.PCR, e.Type, e.Data)
	}
	l.Measure(5, tcgevent.EvEFIAction, []byte("Exit Boot Services Invocation"))
	return Boot{Log: l, UKIDigest: uki}
}

var (
	globalVar       = guid(0x8be4df61, 0x93ca, 0x11d2, [8]byte{0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c})
	imageSecurityDB = guid(0xd719b2cb, 0x3d3a, 0x4596, [8]byte{0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f})
	certX509        = guid(0xa5c059a1, 0x94e4, 0x4aa7, [8]byte{0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72})
	rigosOwner      = guid(0x52494730, 0x5300, 0x4000, [8]byte{0x80, 0, 0, 0, 0, 0, 0, 1})
)

func guid(a uint32, b, c uint16, d [8]byte) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, a)
	_ = binary.Write(&buf, binary.LittleEndian, b)
	_ = binary.Write(&buf, binary.LittleEndian, c)
	buf.Write(d[:])
	return buf.Bytes()
}

// efiVar encodes UEFI_VARIABLE_DATA.
func efiVar(vendor []byte, name string, data []byte) []byte {
	var b bytes.Buffer
	b.Write(vendor)
	u := utf16.Encode([]rune(name))
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(u)))
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(data)))
	_ = binary.Write(&b, binary.LittleEndian, u)
	b.Write(data)
	return b.Bytes()
}

// sigData encodes EFI_SIGNATURE_DATA for a certificate.
func sigData(c *x509.Certificate) []byte {
	return append(append([]byte(nil), rigosOwner...), c.Raw...)
}

// sigList encodes an EFI_SIGNATURE_LIST holding one certificate.
// sigLists is one EFI_SIGNATURE_LIST per certificate, as a variable
// holding several certificates has them.
func sigLists(cs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range cs {
		b = append(b, sigList(c)...)
	}
	return b
}

func sigList(c *x509.Certificate) []byte {
	if c == nil {
		return nil
	}
	d := sigData(c)
	var b bytes.Buffer
	b.Write(certX509)
	_ = binary.Write(&b, binary.LittleEndian, uint32(16+4+4+4+len(d)))
	_ = binary.Write(&b, binary.LittleEndian, uint32(0))
	_ = binary.Write(&b, binary.LittleEndian, uint32(len(d)))
	b.Write(d)
	return b.Bytes()
}

func utf16z(s string) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, utf16.Encode([]rune(s+"\x00")))
	return b.Bytes()
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// DevKeys returns the development PK, KEK and db certificates. They are
// derived from fixed seeds (Ed25519 signatures are deterministic), so
// every build gets the same certificates. They are public test keys.
func DevKeys() (pk, kek, db *x509.Certificate) {
	return Cert("RigOS dev PK", 1), Cert("RigOS dev KEK", 2), Cert("RigOS dev db", 3)
}

// Cert returns a deterministic self-signed Ed25519 certificate for name,
// derived from seed. For tests and development only.
func Cert(name string, seed byte) *x509.Certificate {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(seed)),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2046, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(fmt.Sprintf("devboot: creating %s certificate: %v", name, err)) // static input; cannot fail
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(fmt.Sprintf("devboot: parsing %s certificate: %v", name, err))
	}
	return c
}

// Manifest returns the reference manifest that accepts a boot with cfg.
func Manifest(cfg Config, build string) *attestation.Manifest {
	var dbs []string
	if cfg.Signer != nil {
		s := sha256.Sum256(cfg.Signer.Raw)
		dbs = append(dbs, hex.EncodeToString(s[:]))
	}
	var keks []string
	if cfg.KEK != nil {
		s := sha256.Sum256(cfg.KEK.Raw)
		keks = append(keks, hex.EncodeToString(s[:]))
	}
	return &attestation.Manifest{
		Version:          attestation.ManifestVersion,
		Build:            build,
		Created:          time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC),
		BootApplications: []string{hex.EncodeToString(UKIDigest(cfg.Sections))},
		PCR11:            []string{hex.EncodeToString(PCR11(cfg.Sections))},
		SecureBoot:       attestation.SecureBootPolicy{Required: cfg.SecureBoot, DBCerts: dbs, KEKCerts: keks},
		Phases:           measure.BootPhases,
	}
}
