// Package guid converts GUIDs between their text form (uuid.UUID's byte
// order) and the order UEFI and GPT store them in: the first three
// fields little endian, the last two as they are.
package guid

import (
	"slices"

	"github.com/google/uuid"
)

// ToEFI returns g in the order UEFI and GPT store it.
func ToEFI(g uuid.UUID) []byte {
	b := slices.Clone(g[:])
	swap(b)
	return b
}

// FromEFI reads a GUID stored in UEFI's order (b's first 16 bytes).
func FromEFI(b []byte) uuid.UUID {
	var g uuid.UUID
	copy(g[:], b)
	swap(g[:])
	return g
}

func swap(b []byte) {
	slices.Reverse(b[0:4])
	slices.Reverse(b[4:6])
	slices.Reverse(b[6:8])
}
