package apiv1

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on a node's hardware inventory (Hello.hardware). SMBIOS sets no
// length for its strings; real firmware writes a few dozen characters, and
// the largest machines have 32 processor sockets.
const (
	// MaxHardwareString is the longest string of a HardwareInventory, in
	// bytes.
	MaxHardwareString = 256
	// MaxHardwareProcessors bounds the processors and the sockets an
	// inventory lists.
	MaxHardwareProcessors = 64
)

// Validate checks the inventory's shape and reports every problem at
// once: every string at most MaxHardwareString bytes of printable
// characters, at most MaxHardwareProcessors processors and sockets. A nil
// inventory (the node has no SMBIOS tables) is valid. It checks nothing of
// what the inventory says: it is the node's own claim, not attested.
func (inv *HardwareInventory) Validate() error {
	if inv == nil {
		return nil
	}
	var errs []error
	str := func(name, s string) {
		switch {
		case len(s) > MaxHardwareString:
			errs = append(errs, fmt.Errorf("%s: %d bytes, more than %d", name, len(s), MaxHardwareString))
		case !printable(s):
			errs = append(errs, fmt.Errorf("%s %s: want printable characters", name, quoteShort(s)))
		}
	}
	str("smbios_version", inv.GetSmbiosVersion())
	for _, id := range []struct {
		name string
		v    *HardwareIdentity
	}{{"system", inv.GetSystem()}, {"board", inv.GetBoard()}} {
		str(id.name+".manufacturer", id.v.GetManufacturer())
		str(id.name+".product", id.v.GetProduct())
		str(id.name+".version", id.v.GetVersion())
	}
	str("bios.vendor", inv.GetBios().GetVendor())
	str("bios.version", inv.GetBios().GetVersion())
	str("bios.release_date", inv.GetBios().GetReleaseDate())
	if n := len(inv.GetProcessors()); n > MaxHardwareProcessors {
		errs = append(errs, fmt.Errorf("processors: %d, more than %d", n, MaxHardwareProcessors))
	} else {
		for i, p := range inv.GetProcessors() {
			str(fmt.Sprintf("processors[%d].socket", i), p.GetSocket())
			str(fmt.Sprintf("processors[%d].manufacturer", i), p.GetManufacturer())
			str(fmt.Sprintf("processors[%d].model", i), p.GetModel())
		}
	}
	if n := inv.GetSockets(); n > MaxHardwareProcessors {
		errs = append(errs, fmt.Errorf("sockets: %d, more than %d", n, MaxHardwareProcessors))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hardware inventory: %w", err)
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control or other
// non-printing characters (an inventory's strings end up on terminals).
func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}
