package pid1

import (
	"fmt"

	"github.com/rigos/rigos/pkg/layout"
)

// bootSlot returns the slot the booted UKI belongs to, from the settings
// of its measured kernel command line (layout.SlotParam): init opens that
// slot's system partition. Every RigOS UKI names its slot, so a missing
// or unknown value is an error, never a default: a wrong guess would
// verify the other slot's partition against this UKI's root hash.
func bootSlot(args map[string]string) (layout.Slot, error) {
	v, ok := args[layout.SlotParam]
	if !ok {
		return "", fmt.Errorf("kernel command line has no %s (the slot of this UKI): refusing to guess which system partition to open", layout.SlotParam)
	}
	slot, err := layout.ParseSlot(v)
	if err != nil {
		return "", fmt.Errorf("kernel command line: %s: %w", layout.SlotParam, err)
	}
	return slot, nil
}
