package kmod

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rigos/rigos/kernel"
)

func TestParseModinfo(t *testing.T) {
	m := ParseModinfo([]byte("license=GPL\x00depends=virtio,virtio_ring\x00alias=a\x00alias=b\x00junk\x00"))
	if !slices.Equal(m["depends"], []string{"virtio,virtio_ring"}) || len(m["alias"]) != 2 {
		t.Fatalf("ParseModinfo() = %v", m)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00x=y"))
	f.Fuzz(func(t *testing.T, b []byte) { _ = ParseModinfo(b) })
}

// kernelRoot returns the modules folder of the pinned kernel if it was
// fetched (kernel/fetch.sh); the image tests always fetch it.
func kernelRoot(t *testing.T) string {
	t.Helper()
	l, err := kernel.Pinned()
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir() // kernel/fetch.sh's default: ${XDG_CACHE_HOME:-~/.cache}
	if err != nil {
		t.Skip(err)
	}
	root := filepath.Join(cache, "rigos", "kernel", "root-"+l.Version, "lib", "modules", l.Release)
	if _, err := os.Stat(root); err != nil {
		t.Skipf("pinned kernel not fetched (run kernel/fetch.sh): %v", err)
	}
	return root
}

func TestResolvePinnedKernel(t *testing.T) {
	root := kernelRoot(t)
	mods, err := Resolve(root, kernel.Modules())
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Deps {
			if p, ok := pos[d]; ok && p > pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
	if _, ok := pos["virtio_blk"]; !ok {
		t.Error("virtio_blk not resolved")
	}
	// libcrc32c asks for "crc32c" first (a soft dependency through an
	// alias); without it the module fails to load in an image with no
	// modprobe.
	impl := -1
	for _, m := range []string{"crc32c_generic", "crc32c_intel"} {
		if p, ok := pos[m]; ok {
			impl = p
		}
	}
	if impl < 0 || impl > pos["libcrc32c"] {
		t.Errorf("no crc32c implementation loads before libcrc32c (positions %d, %d)", impl, pos["libcrc32c"])
	}
	for _, m := range mods {
		switch m.Name {
		case "virtio_pci", "virtio_blk", "nvme", "xhci_pci":
			if len(m.Devices) == 0 || !m.Wanted {
				t.Errorf("%s: devices %v, wanted %v; want hardware aliases and wanted", m.Name, m.Devices, m.Wanted)
			}
		case "vfat", "efivarfs":
			if len(m.Devices) != 0 {
				t.Errorf("%s has device aliases %v", m.Name, m.Devices)
			}
		case "virtio_ring", "libata":
			if m.Wanted {
				t.Errorf("%s is only a dependency, marked wanted", m.Name)
			}
		}
	}
	again, _ := Resolve(root, kernel.Modules())
	if !slices.EqualFunc(mods, again, func(a, b Module) bool { return a.Path == b.Path }) {
		t.Error("two resolutions differ")
	}
	if _, err := Resolve(root, []string{"no_such_module"}); err == nil || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("Resolve(unknown) = %v, want an error naming it", err)
	}
}
