package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/google/uuid"

	"github.com/rigos/rigos/pkg/guid"
)

// GPT limits RigOS accepts before anything else parses a table: entries
// of 128 bytes (what every partitioning tool writes), at most
// MaxGPTEntries of them. A disk the owner attached is untrusted input,
// and a header asking for 4 Gi entries of 4 GiB each must not reach an
// allocation.
const (
	gptEntrySize  = 128
	MaxGPTEntries = 256
)

// gptHeader is the primary GPT header's fields RigOS reads.
type gptHeader struct {
	entriesLBA uint64
	entries    uint32
	entriesCRC uint32
}

// CheckGPT reads and checks the primary GPT header of a disk of size
// bytes (512-byte sectors): its signature, size and CRC, and entries of
// gptEntrySize bytes, no more than MaxGPTEntries, inside the disk.
func CheckGPT(r io.ReaderAt, size int64) error {
	_, err := readGPTHeader(r, size)
	return err
}

func readGPTHeader(r io.ReaderAt, size int64) (gptHeader, error) {
	var h gptHeader
	b := make([]byte, sector)
	if _, err := r.ReadAt(b, sector); err != nil {
		return h, fmt.Errorf("reading the GPT header: %w", err)
	}
	if !bytes.Equal(b[:8], []byte("EFI PART")) {
		return h, errors.New("no GPT header")
	}
	hdrSize := binary.LittleEndian.Uint32(b[12:])
	if hdrSize < 92 || hdrSize > sector {
		return h, fmt.Errorf("GPT header of %d bytes", hdrSize)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	hdr := slices.Clone(b[:hdrSize])
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return h, fmt.Errorf("GPT header checksum %08x, want %08x", got, want)
	}
	h.entriesLBA = binary.LittleEndian.Uint64(b[72:])
	h.entries = binary.LittleEndian.Uint32(b[80:])
	h.entriesCRC = binary.LittleEndian.Uint32(b[88:])
	if es := binary.LittleEndian.Uint32(b[84:]); es != gptEntrySize {
		return h, fmt.Errorf("GPT entries of %d bytes, want %d", es, gptEntrySize)
	}
	if h.entries > MaxGPTEntries {
		return h, fmt.Errorf("GPT of %d entries, more than %d", h.entries, MaxGPTEntries)
	}
	if h.entriesLBA < 2 || h.entriesLBA > uint64(size/sector) || int64(h.entriesLBA)*sector+int64(h.entries)*gptEntrySize > size {
		return h, fmt.Errorf("GPT entries at sector %d lie outside the disk", h.entriesLBA)
	}
	return h, nil
}

// PartitionGUIDs reads the unique GUIDs of the used partitions in the
// GPT of a disk of size bytes, checking the table first (CheckGPT) and
// the entries' CRC.
func PartitionGUIDs(r io.ReaderAt, size int64) ([]uuid.UUID, error) {
	h, err := readGPTHeader(r, size)
	if err != nil {
		return nil, err
	}
	b := make([]byte, int(h.entries)*gptEntrySize)
	if _, err := r.ReadAt(b, int64(h.entriesLBA)*sector); err != nil {
		return nil, fmt.Errorf("reading the GPT entries: %w", err)
	}
	if got := crc32.ChecksumIEEE(b); got != h.entriesCRC {
		return nil, fmt.Errorf("GPT entries checksum %08x, want %08x", got, h.entriesCRC)
	}
	var out []uuid.UUID
	for e := range slices.Chunk(b, gptEntrySize) {
		if bytes.Equal(e[:16], make([]byte, 16)) { // unused entry: no type
			continue
		}
		out = append(out, guid.FromEFI(e[16:32]))
	}
	return out, nil
}
