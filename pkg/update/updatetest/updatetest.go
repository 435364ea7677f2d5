// Package updatetest makes stand-ins for update tests.
package updatetest

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
)

// FakeUKI is a minimal PE32+ image whose only section is .cmdline
// holding cmdline, followed by padding bytes (standing in for a kernel
// and initramfs): enough for update.UKISlot, never bootable.
func FakeUKI(cmdline string, padding int) []byte {
	var b bytes.Buffer
	dos := make([]byte, 0x40)
	copy(dos, "MZ")
	binary.LittleEndian.PutUint32(dos[0x3c:], 0x40)
	b.Write(dos)
	b.WriteString("PE\x00\x00")
	const dataOff = 0x200
	data := append([]byte(cmdline), 0)
	raw := (len(data) + 0x1ff) &^ 0x1ff
	// Writes of fixed-size structs to a bytes.Buffer cannot fail.
	_ = binary.Write(&b, binary.LittleEndian, pe.FileHeader{Machine: pe.IMAGE_FILE_MACHINE_AMD64, NumberOfSections: 1, SizeOfOptionalHeader: 240, Characteristics: 0x22})
	_ = binary.Write(&b, binary.LittleEndian, pe.OptionalHeader64{Magic: 0x20b, FileAlignment: 0x200, SectionAlignment: 0x1000, NumberOfRvaAndSizes: 16, SizeOfHeaders: dataOff})
	sh := pe.SectionHeader32{VirtualSize: uint32(len(data)), VirtualAddress: 0x1000, SizeOfRawData: uint32(raw), PointerToRawData: dataOff}
	copy(sh.Name[:], ".cmdline")
	_ = binary.Write(&b, binary.LittleEndian, sh)
	b.Write(make([]byte, dataOff-b.Len()))
	b.Write(data)
	b.Write(make([]byte, raw-len(data)+padding))
	return b.Bytes()
}
