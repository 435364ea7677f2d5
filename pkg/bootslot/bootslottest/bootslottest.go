// Package bootslottest makes boot variables for trial-boot tests.
package bootslottest

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
)

// Option is RigOS's boot entry for a slot's UKI.
func Option(s layout.Slot) efiboot.LoadOption {
	return efiboot.LoadOption{Attributes: efiboot.LoadOptionActive, Description: "RigOS",
		Partition: efiboot.Partition{Number: 1, StartLBA: 2048, SizeLBA: 1 << 17, GUID: uuid.MustParse("0b7c9d4e-1111-4222-8333-444455556666")},
		Path:      `\EFI\RIGOS\rigos-` + string(s) + `.efi`}
}

// Vars returns an efivarfs folder as an update leaves it when the
// firmware booted entry current: Boot0000 is slot A's entry, first in
// BootOrder, Boot0001 slot B's.
func Vars(t testing.TB, current uint16) string {
	t.Helper()
	dir := t.TempDir()
	v := efiboot.Vars{Dir: dir, Unlock: func(string) error { return nil }}
	for _, s := range layout.Slots() {
		if _, err := v.Add(Option(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.SetBootOrder([]uint16{0}); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint32(nil, 6)
	if err := os.WriteFile(filepath.Join(dir, "BootCurrent-"+efiboot.GlobalGUID), binary.LittleEndian.AppendUint16(b, current), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
