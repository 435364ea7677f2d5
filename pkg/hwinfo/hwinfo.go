// Package hwinfo reads a node's hardware inventory from its SMBIOS tables
// (as Linux exposes them in /sys/firmware/dmi/tables): system, board and
// BIOS identity, processors and installed memory.
//
// The tables are written by the firmware. Firmware may measure them into
// PCR 1 (EV_EFI_HANDOFF_TABLES), but this package does not check them
// against any measurement: an inventory is the node's own report, not
// evidence. A verifier may show it and compare it with what it expects,
// but must not trust it the way it trusts a quote. Parse takes the bytes
// as untrusted input.
package hwinfo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/siderolabs/go-smbios/smbios"
)

// DefaultDir is where Linux exposes the SMBIOS entry point and table.
const DefaultDir = "/sys/firmware/dmi/tables"

// MaxTableSize bounds the structure table Read accepts. SMBIOS 2.x
// tables are at most 64 KiB; real 3.x tables are of the same order.
const MaxTableSize = 1 << 20

// Inventory is what the SMBIOS tables say about the machine. Strings are
// as the firmware wrote them, trimmed; empty when absent or a placeholder
// ("To be filled by O.E.M.").
type Inventory struct {
	// SMBIOSVersion is the entry point's version, "major.minor" or
	// "major.minor.docrev" (3.x).
	SMBIOSVersion string
	System        System
	Board         Board
	BIOS          BIOS
	// Processors are the populated processor sockets, in table order.
	Processors []Processor
	// Sockets counts every processor socket the table describes,
	// populated or not.
	Sockets int
	// MemoryBytes is the total size of the installed memory devices; a
	// device of unknown size counts nothing.
	MemoryBytes uint64
	// MemoryDevices counts the installed memory devices.
	MemoryDevices int
}

// System identifies the machine (SMBIOS type 1).
type System struct {
	Manufacturer, Product, Version string
}

// Board identifies the main board (type 2).
type Board struct {
	Manufacturer, Product, Version string
}

// BIOS identifies the firmware (type 0).
type BIOS struct {
	Vendor, Version string
	// ReleaseDate is as the firmware wrote it, usually "mm/dd/yyyy".
	ReleaseDate string
}

// Processor is one populated socket (type 4).
type Processor struct {
	Socket       string // e.g. "CPU1"
	Manufacturer string
	Model        string // the processor version string
	Cores        int    // 0: unknown
	Threads      int    // 0: unknown
}

// Cores is the sum of the processors' cores.
func (inv *Inventory) Cores() int {
	n := 0
	for _, p := range inv.Processors {
		n += p.Cores
	}
	return n
}

// Read reads the inventory from dir, which holds smbios_entry_point and
// DMI as in DefaultDir.
func Read(dir string) (*Inventory, error) {
	ep, err := os.ReadFile(filepath.Join(dir, "smbios_entry_point"))
	if err != nil {
		return nil, fmt.Errorf("reading SMBIOS entry point: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, "DMI"))
	if err != nil {
		return nil, fmt.Errorf("reading SMBIOS table: %w", err)
	}
	defer f.Close()
	table, err := io.ReadAll(io.LimitReader(f, MaxTableSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading SMBIOS table: %w", err)
	}
	if len(table) > MaxTableSize {
		return nil, fmt.Errorf("reading SMBIOS table: larger than %d bytes", MaxTableSize)
	}
	return Parse(ep, table)
}

// Errors Parse returns for a malformed entry point.
var (
	ErrEntryPoint = errors.New("not an SMBIOS entry point")
	ErrChecksum   = errors.New("SMBIOS entry point checksum mismatch")
)

// Parse decodes an SMBIOS entry point (the 32-bit "_SM_" or 64-bit "_SM3_"
// form) and its structure table.
func Parse(entryPoint, table []byte) (*Inventory, error) {
	v, err := parseEntryPoint(entryPoint)
	if err != nil {
		return nil, err
	}
	s, err := decode(table, v)
	if err != nil {
		return nil, fmt.Errorf("decoding SMBIOS table: %w", err)
	}
	inv := &Inventory{SMBIOSVersion: fmt.Sprintf("%d.%d", v.Major, v.Minor)}
	if v.Major >= 3 {
		inv.SMBIOSVersion += fmt.Sprintf(".%d", v.Revision)
	}
	inv.System = System{s.SystemInformation.Manufacturer, s.SystemInformation.ProductName, s.SystemInformation.Version}
	inv.Board = Board{s.BaseboardInformation.Manufacturer, s.BaseboardInformation.Product, s.BaseboardInformation.Version}
	inv.BIOS = BIOS{s.BIOSInformation.Vendor, s.BIOSInformation.Version, s.BIOSInformation.ReleaseDate}
	for _, st := range s.Structures {
		if st.Header.Type != 4 {
			continue
		}
		inv.Sockets++
		p := smbios.NewProcessorInformation(st)
		if !p.Status.SocketPopulated() {
			continue
		}
		cores, threads := int(p.CoreCount), int(p.ThreadCount)
		// SMBIOS 3.0: FFh means the count is in the word "Core Count 2"
		// (offset 2Ah) or "Thread Count 2" (2Eh).
		if cores == 0xFF {
			if c2 := int(smbios.GetWord(st, 0x2A)); c2 != 0 {
				cores = c2
			}
		}
		if threads == 0xFF {
			if t2 := int(smbios.GetWord(st, 0x2E)); t2 != 0 {
				threads = t2
			}
		}
		inv.Processors = append(inv.Processors, Processor{Socket: p.SocketDesignation,
			Manufacturer: p.ProcessorManufacturer, Model: p.ProcessorVersion, Cores: cores, Threads: threads})
	}
	for _, m := range s.MemoryDevices {
		if m.Size == 0 {
			continue // empty slot
		}
		inv.MemoryDevices++
		inv.MemoryBytes += memoryDeviceBytes(uint16(m.Size), uint32(m.ExtendedSize))
	}
	return inv, nil
}

// ErrMalformed reports a structure table go-smbios could not decode
// without panicking.
var ErrMalformed = errors.New("malformed SMBIOS structure")

// decode runs go-smbios's decoder, turning its panics on malformed
// structures into ErrMalformed: go-smbios v0.3.3 slices a System
// Information structure shorter than its UUID field without a bounds
// check (found by FuzzParse).
func decode(table []byte, v smbios.Version) (s *smbios.SMBIOS, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	return smbios.Decode(bytes.NewReader(table), v)
}

// memoryDeviceBytes is the size of a memory device (type 17) from its
// Size and Extended Size fields; 0 when unknown.
func memoryDeviceBytes(size uint16, extended uint32) uint64 {
	const kib, mib = 1 << 10, 1 << 20
	switch {
	case size == 0xFFFF:
		return 0 // unknown
	case size == 0x7FFF:
		return uint64(extended&0x7FFFFFFF) * mib
	case size&0x8000 != 0:
		return uint64(size&0x7FFF) * kib
	default:
		return uint64(size) * mib
	}
}

// parseEntryPoint returns the SMBIOS version of an entry point after
// checking its anchor, length and checksum.
func parseEntryPoint(b []byte) (smbios.Version, error) {
	var length int
	var v smbios.Version
	switch {
	case bytes.HasPrefix(b, []byte("_SM3_")):
		// 64-bit entry point: length at 06h, version at 07h-09h.
		if len(b) < 0x18 {
			return v, fmt.Errorf("%w: %d bytes", ErrEntryPoint, len(b))
		}
		length = int(b[0x06])
		v = smbios.Version{Major: int(b[0x07]), Minor: int(b[0x08]), Revision: int(b[0x09])}
		if length < 0x18 {
			return v, fmt.Errorf("%w: length %d", ErrEntryPoint, length)
		}
	case bytes.HasPrefix(b, []byte("_SM_")):
		// 32-bit entry point: length at 05h, version at 06h-07h.
		if len(b) < 0x1F {
			return v, fmt.Errorf("%w: %d bytes", ErrEntryPoint, len(b))
		}
		length = int(b[0x05])
		v = smbios.Version{Major: int(b[0x06]), Minor: int(b[0x07])}
		if length < 0x1E {
			return v, fmt.Errorf("%w: length %d", ErrEntryPoint, length)
		}
	default:
		return v, fmt.Errorf("%w: anchor %q", ErrEntryPoint, b[:min(len(b), 5)])
	}
	if length > len(b) {
		return v, fmt.Errorf("%w: length %d, have %d bytes", ErrEntryPoint, length, len(b))
	}
	var sum byte
	for _, c := range b[:length] {
		sum += c
	}
	if sum != 0 {
		return v, ErrChecksum
	}
	return v, nil
}
