package session

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/hwinfo"
)

func TestHardwareProto(t *testing.T) {
	inv, err := hwinfo.Read("../hwinfo/testdata/dell-r630")
	if err != nil {
		t.Fatal(err)
	}
	want := &apiv1.HardwareInventory{
		SmbiosVersion: "3.0.0",
		System:        &apiv1.HardwareIdentity{Manufacturer: "Dell Inc.", Product: "PowerEdge R630"},
		Board:         &apiv1.HardwareIdentity{Manufacturer: "Dell Inc.", Product: "02C2CP", Version: "A00"},
		Bios:          &apiv1.HardwareBIOS{Vendor: "Dell Inc.", Version: "2.3.4", ReleaseDate: "11/08/2016"},
		Processors: []*apiv1.HardwareProcessor{{Socket: "CPU1", Manufacturer: "Intel",
			Model: "Intel(R) Xeon(R) CPU E5-2630 v3 @ 2.40GHz", Cores: 8, Threads: 16}},
		Sockets: 2, MemoryBytes: 32 << 30, MemoryDevices: 2,
	}
	got := hardwareProto(inv)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("hardwareProto(dell-r630) differs (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("hardwareProto(dell-r630).Validate() = %v, want nil", err)
	}
	if got := hardwareProto(nil); got != nil {
		t.Errorf("hardwareProto(nil) = %v, want nil", got)
	}
}

// Firmware strings are untrusted bytes: whatever the tables hold, the
// hello's inventory passes the verifier's bounds instead of getting the
// node refused.
func TestHardwareProtoFitsLimits(t *testing.T) {
	odd := &hwinfo.Inventory{
		SMBIOSVersion: "3.0\x00",
		System:        hwinfo.System{Manufacturer: "\xff\xfeACME", Product: strings.Repeat("é", apiv1.MaxHardwareString)},
		BIOS:          hwinfo.BIOS{Vendor: "AMI\x1b[2J"},
		Sockets:       1000,
		MemoryDevices: -1,
	}
	for range apiv1.MaxHardwareProcessors + 10 {
		odd.Processors = append(odd.Processors, hwinfo.Processor{Model: strings.Repeat("x", 1<<16), Cores: -1})
	}
	got := hardwareProto(odd)
	if err := got.Validate(); err != nil {
		t.Fatalf("hardwareProto(odd).Validate() = %v, want nil", err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"smbios_version", got.GetSmbiosVersion(), "3.0?"},
		{"system.manufacturer", got.GetSystem().GetManufacturer(), "?ACME"}, // a run of invalid bytes is one ?,
		{"system.product", got.GetSystem().GetProduct(), strings.Repeat("é", apiv1.MaxHardwareString/2)},
		{"bios.vendor", got.GetBios().GetVendor(), "AMI?[2J"},
	} {
		if c.got != c.want {
			t.Errorf("hardwareProto(odd) %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if n := len(got.GetProcessors()); n != apiv1.MaxHardwareProcessors {
		t.Errorf("hardwareProto(odd) has %d processors, want %d", n, apiv1.MaxHardwareProcessors)
	}
	if got.GetSockets() != apiv1.MaxHardwareProcessors || got.GetMemoryDevices() != 0 || got.GetProcessors()[0].GetCores() != 0 {
		t.Errorf("hardwareProto(odd) counts: sockets %d, memory devices %d, cores %d; want 64, 0, 0",
			got.GetSockets(), got.GetMemoryDevices(), got.GetProcessors()[0].GetCores())
	}
}
