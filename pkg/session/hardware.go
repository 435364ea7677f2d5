package session

import (
	"strings"
	"unicode"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/hwinfo"
)

// hardwareProto is the hello's form of inv (nil for nil), fitted to the
// limits apiv1.HardwareInventory.Validate checks: the firmware's strings
// are untrusted bytes, so invalid UTF-8 and non-printing characters
// become '?', and strings and lists are cut at the limits rather than
// getting the node refused for its firmware's oddities.
func hardwareProto(inv *hwinfo.Inventory) *apiv1.HardwareInventory {
	if inv == nil {
		return nil
	}
	id := func(manufacturer, product, version string) *apiv1.HardwareIdentity {
		return &apiv1.HardwareIdentity{Manufacturer: clip(manufacturer), Product: clip(product), Version: clip(version)}
	}
	out := &apiv1.HardwareInventory{
		SmbiosVersion: clip(inv.SMBIOSVersion),
		System:        id(inv.System.Manufacturer, inv.System.Product, inv.System.Version),
		Board:         id(inv.Board.Manufacturer, inv.Board.Product, inv.Board.Version),
		Bios:          &apiv1.HardwareBIOS{Vendor: clip(inv.BIOS.Vendor), Version: clip(inv.BIOS.Version), ReleaseDate: clip(inv.BIOS.ReleaseDate)},
		Sockets:       uint32(min(max(inv.Sockets, 0), apiv1.MaxHardwareProcessors)),
		MemoryBytes:   inv.MemoryBytes,
		MemoryDevices: uint32(max(inv.MemoryDevices, 0)),
	}
	for i, p := range inv.Processors {
		if i == apiv1.MaxHardwareProcessors {
			break
		}
		out.Processors = append(out.Processors, &apiv1.HardwareProcessor{
			Socket: clip(p.Socket), Manufacturer: clip(p.Manufacturer), Model: clip(p.Model),
			Cores: uint32(max(p.Cores, 0)), Threads: uint32(max(p.Threads, 0)),
		})
	}
	return out
}

// clip makes s printable UTF-8 of at most apiv1.MaxHardwareString bytes.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > apiv1.MaxHardwareString {
		// s is valid UTF-8 here: cutting it can only split its last rune,
		// which ToValidUTF8 then drops.
		s = strings.ToValidUTF8(s[:apiv1.MaxHardwareString], "")
	}
	return s
}
