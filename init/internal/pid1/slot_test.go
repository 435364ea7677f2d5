package pid1

import (
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/layout"
)

// The slot comes from the command line as the imager writes it; a
// missing or unknown slot is refused with an error naming the setting.
func TestBootSlot(t *testing.T) {
	const system = "rigos.system=ab:cd:3"
	for _, tc := range []struct {
		cmdline string
		want    layout.Slot // "" for an error
	}{
		{system + " rigos.slot=a", layout.SlotA},
		{"rigos.slot=b " + system, layout.SlotB},
		{"rigos.slot=b quiet rigos.slot=a", layout.SlotA}, // the last setting wins, as in the kernel
		{system, ""},
		{"", ""},
		{system + " rigos.slot", ""},
		{system + " rigos.slot=", ""},
		{system + " rigos.slot=A", ""},
		{system + " rigos.slot=c", ""},
		{system + " rigos.slot=ab", ""},
		{system + ` rigos.slot="a "`, ""},
		{system + " rigos.slot=../../a", ""},
		{system + " rigos.slots=a", ""},
	} {
		args, err := cmdline.Parse(tc.cmdline)
		if err != nil {
			t.Fatalf("cmdline.Parse(%q): %v", tc.cmdline, err)
		}
		got, err := bootSlot(args)
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), layout.SlotParam) {
				t.Errorf("bootSlot(%q) = %q, %v, want an error naming %s", tc.cmdline, got, err, layout.SlotParam)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("bootSlot(%q) = %q, %v, want %q", tc.cmdline, got, err, tc.want)
		}
	}
}
