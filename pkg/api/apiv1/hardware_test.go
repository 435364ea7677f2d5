package apiv1

import (
	"strings"
	"testing"
)

func TestHardwareInventoryValidate(t *testing.T) {
	good := func() *HardwareInventory {
		return &HardwareInventory{SmbiosVersion: "3.3.0",
			System: &HardwareIdentity{Manufacturer: "Supermicro", Product: "SYS-821GE-TNHR", Version: "0123456789"},
			Board:  &HardwareIdentity{Manufacturer: "Supermicro", Product: "X13DEG-OAD", Version: "1.01"},
			Bios:   &HardwareBIOS{Vendor: "American Megatrends International, LLC.", Version: "2.1", ReleaseDate: "02/21/2024"},
			Processors: []*HardwareProcessor{
				{Socket: "CPU1", Manufacturer: "Intel(R) Corporation", Model: "Intel(R) Xeon(R) Platinum 8480+", Cores: 56, Threads: 112},
				{Socket: "CPU2", Manufacturer: "Intel(R) Corporation", Model: "Intel(R) Xeon(R) Platinum 8480+", Cores: 56, Threads: 112},
			},
			Sockets: 2, MemoryBytes: 2 << 40, MemoryDevices: 32,
		}
	}
	for name, inv := range map[string]*HardwareInventory{"good": good(), "nil": nil, "empty": {}} {
		if err := inv.Validate(); err != nil {
			t.Errorf("Validate(%s) = %v, want nil", name, err)
		}
	}
	long := strings.Repeat("x", MaxHardwareString+1)
	cases := map[string]struct {
		mod  func(*HardwareInventory)
		want []string
	}{
		"long product":  {func(i *HardwareInventory) { i.System.Product = long }, []string{"system.product: 257 bytes, more than 256"}},
		"long model":    {func(i *HardwareInventory) { i.Processors[1].Model = long }, []string{"processors[1].model: 257 bytes"}},
		"control":       {func(i *HardwareInventory) { i.Bios.Vendor = "AMI\x1b[2J" }, []string{`bios.vendor "AMI\x1b[2J": want printable`}},
		"invalid utf-8": {func(i *HardwareInventory) { i.Board.Version = "\xff" }, []string{"board.version", "want printable"}},
		"many sockets":  {func(i *HardwareInventory) { i.Sockets = MaxHardwareProcessors + 1 }, []string{"sockets: 65, more than 64"}},
		"many processors": {func(i *HardwareInventory) {
			for len(i.Processors) <= MaxHardwareProcessors {
				i.Processors = append(i.Processors, &HardwareProcessor{Model: long})
			}
		}, []string{"processors: 65, more than 64"}},
		"every problem": {func(i *HardwareInventory) { i.SmbiosVersion, i.Bios.ReleaseDate = long, "\n" },
			[]string{"smbios_version: 257 bytes", "bios.release_date \"\\n\""}},
	}
	for name, c := range cases {
		inv := good()
		c.mod(inv)
		err := inv.Validate()
		if err == nil {
			t.Errorf("Validate(%s) = nil, want an error", name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "hardware inventory: ") {
				t.Errorf("Validate(%s) = %v, want it to name %q", name, err, w)
			}
		}
	}
}
