// Package statedisk defines the header of RigOS's encrypted STATE
// partition. The partition is dm-crypt (aes-xts-plain64, 512-bit key);
// its key exists only sealed by the node's TPM, to the Secure Boot state
// (PCR 7) and the runtime PCR at the boot phase where init unlocks it
// (PCR 15 after "modules-locked"). Init extends PCR 15 right after
// unlocking, so nothing that runs later, workloads included, can unseal
// the key again. The owner reading the disk offline sees the header (a
// TPM-sealed blob) and ciphertext.
//
// Layout: two copies of the header (slots at 0 and SlotSize), then the
// encrypted data from DataOffset to the end of the partition. A slot is
// Magic, a big-endian uint32 length, the header as JSON, and the SHA-256
// of that JSON. Init writes the header only after the file system inside
// is complete, so a first boot cut short leaves a blank partition, which
// the next boot formats again; a damaged header is never formatted over.
package statedisk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rigos/rigos/pkg/tpm"
)

// Format constants.
const (
	Magic      = "RIGOSST1"
	Version    = 1
	SlotSize   = 64 << 10
	Slots      = 2
	DataOffset = 1 << 20 // bytes; the first MiB holds the header slots
	Cipher     = "aes-xts-plain64"
	KeySize    = 64 // bytes: AES-256 in XTS mode
)

// SealPCRs are the PCRs the key is sealed to.
var SealPCRs = []int{7, 15}

// ErrBlank means the partition has no header in either slot: it was
// never formatted (or its first format was cut short).
var ErrBlank = errors.New("state partition is blank")

// ErrDamaged means a header is there but neither copy is intact.
var ErrDamaged = errors.New("state partition header is damaged")

// Header describes one encrypted STATE partition.
type Header struct {
	Version    int        `json:"version"`
	Cipher     string     `json:"cipher"`
	KeySize    int        `json:"key_size"`
	DataOffset int64      `json:"data_offset"`
	Key        tpm.Sealed `json:"key"`
}

// New returns a header for a key sealed as s.
func New(s *tpm.Sealed) *Header {
	return &Header{Version: Version, Cipher: Cipher, KeySize: KeySize, DataOffset: DataOffset, Key: *s}
}

// Encode returns both header slots (Slots × SlotSize bytes).
func (h *Header) Encode() ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	j, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if len(Magic)+4+len(j)+sha256.Size > SlotSize {
		return nil, fmt.Errorf("state header of %d bytes does not fit a slot", len(j))
	}
	slot := make([]byte, SlotSize)
	n := copy(slot, Magic)
	binary.BigEndian.PutUint32(slot[n:], uint32(len(j)))
	n += 4
	n += copy(slot[n:], j)
	sum := sha256.Sum256(j)
	copy(slot[n:], sum[:])
	return bytes.Repeat(slot, Slots), nil
}

// Decode reads the header from the start of the partition (at least
// Slots × SlotSize bytes). It returns ErrBlank when no slot has the
// magic, and an error wrapping ErrDamaged when none is intact.
func Decode(b []byte) (*Header, error) {
	if len(b) < Slots*SlotSize {
		return nil, fmt.Errorf("state header: read %d bytes, need %d", len(b), Slots*SlotSize)
	}
	var errs []error
	blank := true
	for i := 0; i < Slots; i++ {
		slot := b[i*SlotSize : (i+1)*SlotSize]
		if !bytes.HasPrefix(slot, []byte(Magic)) {
			errs = append(errs, fmt.Errorf("slot %d: no header", i))
			continue
		}
		blank = false
		h, err := decodeSlot(slot)
		if err == nil {
			return h, nil
		}
		errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
	}
	if blank {
		return nil, ErrBlank
	}
	return nil, fmt.Errorf("%w: %w", ErrDamaged, errors.Join(errs...))
}

func decodeSlot(slot []byte) (*Header, error) {
	n := len(Magic)
	size := int(binary.BigEndian.Uint32(slot[n:]))
	n += 4
	if size <= 0 || n+size+sha256.Size > len(slot) {
		return nil, fmt.Errorf("length %d out of range", size)
	}
	j := slot[n : n+size]
	sum := sha256.Sum256(j)
	if !bytes.Equal(sum[:], slot[n+size:n+size+sha256.Size]) {
		return nil, errors.New("checksum mismatch")
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var h Header
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	if err := h.check(); err != nil {
		return nil, err
	}
	return &h, nil
}

func (h *Header) check() error {
	var errs []error
	if h.Version != Version {
		errs = append(errs, fmt.Errorf("version %d (this build reads %d)", h.Version, Version))
	}
	if h.Cipher != Cipher || h.KeySize != KeySize {
		errs = append(errs, fmt.Errorf("cipher %s/%d bytes (want %s/%d)", h.Cipher, h.KeySize, Cipher, KeySize))
	}
	if h.DataOffset != DataOffset {
		errs = append(errs, fmt.Errorf("data offset %d (want %d)", h.DataOffset, DataOffset))
	}
	if len(h.Key.PCRs) == 0 || len(h.Key.Public) == 0 || len(h.Key.Private) == 0 || len(h.Key.SRKName) == 0 {
		errs = append(errs, errors.New("sealed key incomplete"))
	}
	return errors.Join(errs...)
}
