package pid1

import (
	"path"
	"strings"

	"github.com/rigos/rigos/pkg/bootconfig"
)

// asyncBuses enumerate their devices after their host driver loaded, too
// late to be seen by a rescan: their drivers load with the host driver.
var asyncBuses = map[string]string{"usb": "usbcore", "scsi": "scsi_mod"}

// modulePlan decides which of the allowlisted modules to load next,
// given the modaliases of the devices present and the modules already
// loaded. It returns them in load order (mods is in dependency order).
// Wanted modules without device aliases always load; those with aliases
// load when a device matches, or (USB, SCSI) when their bus is up.
func modulePlan(mods []bootconfig.Module, devices []string, loaded map[string]bool) []bootconfig.Module {
	byName := map[string]bootconfig.Module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	want := map[string]bool{}
	var add func(name string)
	add = func(name string) {
		if want[name] {
			return
		}
		want[name] = true
		for _, d := range byName[name].Deps {
			add(d)
		}
	}
	for _, m := range mods {
		if m.Wanted && (len(m.Devices) == 0 || matchesAny(m.Devices, devices)) {
			add(m.Name)
		}
	}
	for _, m := range mods {
		if !m.Wanted || len(m.Devices) == 0 {
			continue
		}
		host, async := asyncBuses[bus(m.Devices[0])]
		if async && (want[host] || loaded[host]) && onBus(m.Devices, bus(m.Devices[0])) {
			add(m.Name)
		}
	}
	var out []bootconfig.Module
	for _, m := range mods {
		if want[m.Name] && !loaded[m.Name] {
			out = append(out, m)
		}
	}
	return out
}

func bus(alias string) string {
	b, _, _ := strings.Cut(alias, ":")
	return b
}

func onBus(aliases []string, b string) bool {
	for _, a := range aliases {
		if bus(a) != b {
			return false
		}
	}
	return true
}

func matchesAny(patterns, devices []string) bool {
	for _, p := range patterns {
		for _, d := range devices {
			if ok, _ := path.Match(p, d); ok {
				return true
			}
		}
	}
	return false
}
