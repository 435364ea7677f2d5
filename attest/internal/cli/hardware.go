package cli

import (
	"fmt"
	"strings"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// hardwareLines describes a node's hardware inventory for `attest node`.
// The inventory is what the node reported, not evidence: the first line
// says so.
func hardwareLines(hw *apiv1.HardwareInventory) []string {
	if hw == nil {
		return []string{"hardware: not reported (the node sent no SMBIOS inventory)"}
	}
	var parts []string
	if s := join(hw.GetSystem().GetManufacturer(), hw.GetSystem().GetProduct(), hw.GetSystem().GetVersion()); s != "" {
		parts = append(parts, s)
	}
	if b := join(hw.GetBoard().GetManufacturer(), hw.GetBoard().GetProduct(), hw.GetBoard().GetVersion()); b != "" {
		parts = append(parts, "board "+b)
	}
	if b := join(hw.GetBios().GetVendor(), hw.GetBios().GetVersion()); b != "" {
		if d := hw.GetBios().GetReleaseDate(); d != "" {
			b += " (" + d + ")"
		}
		parts = append(parts, "BIOS "+b)
	}
	if len(parts) == 0 {
		parts = append(parts, "no identity")
	}
	first := "hardware (reported by the node, not attested): " + strings.Join(parts, ", ")

	// Processors, grouped by model in table order.
	var models []string
	count := map[string]int{}
	var cores, threads uint32
	for _, p := range hw.GetProcessors() {
		m := p.GetModel()
		if m == "" {
			m = "unknown processor"
		}
		if count[m] == 0 {
			models = append(models, m)
		}
		count[m]++
		cores += p.GetCores()
		threads += p.GetThreads()
	}
	var cpus []string
	for _, m := range models {
		cpus = append(cpus, fmt.Sprintf("%d× %s", count[m], m))
	}
	second := fmt.Sprintf("  %d of %d sockets populated", len(hw.GetProcessors()), hw.GetSockets())
	if len(cpus) > 0 {
		second += ": " + strings.Join(cpus, ", ") + fmt.Sprintf(", %d cores, %d threads", cores, threads)
	}
	second += fmt.Sprintf("; memory %s in %d devices", bytesIEC(hw.GetMemoryBytes()), hw.GetMemoryDevices())
	return []string{first, second}
}

// join joins the non-empty strings with spaces.
func join(s ...string) string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return strings.Join(out, " ")
}

// bytesIEC formats n in the largest binary unit that keeps it at 1 or
// more, e.g. "64 GiB" or "1.5 TiB".
func bytesIEC(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i, f := 0, float64(n)
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f == float64(uint64(f)) {
		return fmt.Sprintf("%d %s", uint64(f), units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
