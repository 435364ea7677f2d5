package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

func TestHardwareLines(t *testing.T) {
	cpu := &apiv1.HardwareProcessor{Socket: "CPU 1", Model: "Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz", Cores: 8, Threads: 16}
	for _, tc := range []struct {
		name string
		hw   *apiv1.HardwareInventory
		want []string
	}{
		{"none", nil, []string{"hardware: not reported (the node sent no SMBIOS inventory)"}},
		{"supermicro", &apiv1.HardwareInventory{
			System:     &apiv1.HardwareIdentity{Manufacturer: "Supermicro", Product: "SYS-1027R-WRF", Version: "0123456789"},
			Board:      &apiv1.HardwareIdentity{Manufacturer: "Supermicro", Product: "X9DRW"},
			Bios:       &apiv1.HardwareBIOS{Vendor: "American Megatrends Inc.", Version: "3.0c", ReleaseDate: "03/24/2014"},
			Processors: []*apiv1.HardwareProcessor{cpu, cpu}, Sockets: 2, MemoryBytes: 64 << 30, MemoryDevices: 16,
		}, []string{
			"hardware (reported by the node, not attested): Supermicro SYS-1027R-WRF 0123456789, board Supermicro X9DRW, BIOS American Megatrends Inc. 3.0c (03/24/2014)",
			"  2 of 2 sockets populated: 2× Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz, 16 cores, 32 threads; memory 64 GiB in 16 devices",
		}},
		{"empty", &apiv1.HardwareInventory{MemoryBytes: 3 << 29}, []string{
			"hardware (reported by the node, not attested): no identity",
			"  0 of 0 sockets populated; memory 1.5 GiB in 0 devices",
		}},
	} {
		if diff := cmp.Diff(tc.want, hardwareLines(tc.hw)); diff != "" {
			t.Errorf("hardwareLines(%s) differs (-want +got):\n%s", tc.name, diff)
		}
	}
}
