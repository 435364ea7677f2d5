package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
)

// loadModules loads the modules in mods (paths relative to dir) that the
// hardware present needs, rescanning the devices after each round
// because drivers create devices (virtio_pci creates the virtio devices,
// for instance). Every module planned is tried: the error names each one
// the kernel refused, and why.
func loadModules(sys sysfs, dir string, mods []bootconfig.Module) (map[string]bool, error) {
	loaded := map[string]bool{}
	failed := map[string]bool{}
	var errs []error
	for round := 0; round < 5; round++ {
		var plan []bootconfig.Module
		for _, m := range modulePlan(mods, sys.deviceAliases(), loaded) {
			if !failed[m.Name] {
				plan = append(plan, m)
			}
		}
		if len(plan) == 0 {
			break
		}
		for _, m := range plan {
			if err := loadModule(filepath.Join(dir, m.Path), m.Name); err != nil {
				failed[m.Name] = true
				errs = append(errs, err)
				continue
			}
			loaded[m.Name] = true
		}
	}
	return loaded, errors.Join(errs...)
}

func loadModule(path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening module %s: %w", name, err)
	}
	defer f.Close()
	start := time.Now()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if d := time.Since(start); d > 100*time.Millisecond {
		say("module %s took %s", name, d.Round(time.Millisecond))
	}
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY):
		return fmt.Errorf("loading module %s: refused by the kernel, not signed by a trusted key: %w", name, err)
	default:
		return fmt.Errorf("loading module %s: %w", name, err)
	}
}
