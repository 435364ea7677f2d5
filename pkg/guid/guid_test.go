package guid

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
)

// The EFI global variable GUID, as UEFI stores it (the spec's bytes).
func TestEFIOrder(t *testing.T) {
	g := uuid.MustParse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	stored := []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
	if got := ToEFI(g); !bytes.Equal(got, stored) {
		t.Errorf("ToEFI = % x, want % x", got, stored)
	}
	if got := FromEFI(stored); got != g {
		t.Errorf("FromEFI = %s, want %s", got, g)
	}
	if g[0] != 0x8b {
		t.Error("ToEFI changed its argument")
	}
}
