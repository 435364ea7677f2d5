package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
)

// loadModules loads the allowlisted modules the hardware present needs,
// rescanning the devices after each round because drivers create devices
// (virtio_pci creates the virtio devices, for instance).
func loadModules(sys sysfs, mods []bootconfig.Module) (int, error) {
	loaded := map[string]bool{}
	for round := 0; round < 5; round++ {
		plan := modulePlan(mods, sys.deviceAliases(), loaded)
		if len(plan) == 0 {
			break
		}
		for _, m := range plan {
			full := filepath.Join(layout.ModulesDir, m.Path)
			f, err := os.Open(full)
			if err != nil {
				return len(loaded), fmt.Errorf("opening module %s: %w", m.Path, err)
			}
			start := time.Now()
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			if d := time.Since(start); d > 100*time.Millisecond {
				say("module %s took %s", m.Name, d.Round(time.Millisecond))
			}
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return len(loaded), fmt.Errorf("loading module %s: %w", m.Name, err)
			}
			loaded[m.Name] = true
		}
	}
	return len(loaded), nil
}
