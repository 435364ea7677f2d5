package pid1

import (
	"slices"
	"testing"

	"github.com/rigos/rigos/pkg/bootconfig"
)

func names(ms []bootconfig.Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestModulePlan(t *testing.T) {
	mods := []bootconfig.Module{
		{Name: "virtio"}, {Name: "virtio_ring"},
		{Name: "virtio_pci", Deps: []string{"virtio", "virtio_ring"}, Devices: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}, Wanted: true},
		{Name: "virtio_blk", Deps: []string{"virtio"}, Devices: []string{"virtio:d00000002v*"}, Wanted: true},
		{Name: "e1000e", Devices: []string{"pci:v00008086d000010D3sv*sd*bc*sc*i*"}, Wanted: true},
		{Name: "usbcore"},
		{Name: "xhci_pci", Deps: []string{"usbcore"}, Devices: []string{"pci:v*d*sv*sd*bc0Csc03i30*"}, Wanted: true},
		{Name: "usb_storage", Deps: []string{"usbcore"}, Devices: []string{"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*"}, Wanted: true},
		{Name: "vfat", Wanted: true},
	}
	// First round: only the virtio PCI device is present.
	dev := []string{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"}
	got := names(modulePlan(mods, dev, map[string]bool{}))
	if want := []string{"virtio", "virtio_ring", "virtio_pci", "vfat"}; !slices.Equal(got, want) {
		t.Fatalf("round 1 = %v, want %v", got, want)
	}
	// virtio_pci created a virtio block device.
	loaded := map[string]bool{"virtio": true, "virtio_ring": true, "virtio_pci": true, "vfat": true}
	got = names(modulePlan(mods, append(dev, "virtio:d00000002v00001AF4"), loaded))
	if want := []string{"virtio_blk"}; !slices.Equal(got, want) {
		t.Fatalf("round 2 = %v, want %v", got, want)
	}
	// A USB host controller brings its bus's drivers (devices appear later).
	got = names(modulePlan(mods, []string{"pci:v00008086d00001E31sv00001043sd00001477bc0Csc03i30"}, map[string]bool{}))
	if want := []string{"usbcore", "xhci_pci", "usb_storage", "vfat"}; !slices.Equal(got, want) {
		t.Fatalf("USB host = %v, want %v", got, want)
	}
}
