package hwinfo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRead(t *testing.T) {
	xeon := func(socket, model string) Processor {
		return Processor{Socket: socket, Manufacturer: "Intel", Model: model, Cores: 8, Threads: 16}
	}
	for _, tc := range []struct {
		dir   string
		want  *Inventory
		cores int
	}{
		{"dell-r630", &Inventory{
			SMBIOSVersion: "3.0.0",
			System:        System{Manufacturer: "Dell Inc.", Product: "PowerEdge R630"},
			Board:         Board{Manufacturer: "Dell Inc.", Product: "02C2CP", Version: "A00"},
			BIOS:          BIOS{Vendor: "Dell Inc.", Version: "2.3.4", ReleaseDate: "11/08/2016"},
			Processors:    []Processor{xeon("CPU1", "Intel(R) Xeon(R) CPU E5-2630 v3 @ 2.40GHz")},
			Sockets:       2,
			MemoryBytes:   32 << 30,
			MemoryDevices: 2,
		}, 8},
		{"supermicro-x9drw", &Inventory{
			SMBIOSVersion: "3.0.0",
			System:        System{Manufacturer: "Supermicro", Product: "SYS-1027R-WRF", Version: "0123456789"},
			Board:         Board{Manufacturer: "Supermicro", Product: "X9DRW", Version: "0123456789"},
			BIOS:          BIOS{Vendor: "American Megatrends Inc.", Version: "3.0c", ReleaseDate: "03/24/2014"},
			Processors: []Processor{
				xeon("CPU 1", "Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz"),
				xeon("CPU 2", "Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz"),
			},
			Sockets:       2,
			MemoryBytes:   64 << 30,
			MemoryDevices: 16,
		}, 16},
	} {
		got, err := Read(filepath.Join("testdata", tc.dir))
		if err != nil {
			t.Fatalf("Read(%s) = %v", tc.dir, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Read(%s) (-want +got):\n%s", tc.dir, diff)
		}
		if c := got.Cores(); c != tc.cores {
			t.Errorf("Read(%s).Cores() = %d, want %d", tc.dir, c, tc.cores)
		}
	}
}

func TestReadMissing(t *testing.T) {
	if _, err := Read(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(empty dir) = %v, want ErrNotExist", err)
	}
}

func TestReadRefusesHugeTable(t *testing.T) {
	dir := t.TempDir()
	ep, err := os.ReadFile("testdata/dell-r630/smbios_entry_point")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "smbios_entry_point"), ep, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "DMI"), make([]byte, MaxTableSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); err == nil {
		t.Error("Read() accepted a table over MaxTableSize")
	}
}

// entryPoint32 is a valid 32-bit ("_SM_") entry point for SMBIOS 2.8.
func entryPoint32() []byte {
	b := make([]byte, 0x1F)
	copy(b, "_SM_")
	b[0x05], b[0x06], b[0x07] = 0x1F, 2, 8
	copy(b[0x10:], "_DMI_")
	fixChecksum(b, 0x04)
	return b
}

func fixChecksum(b []byte, at int) {
	b[at] = 0
	var sum byte
	for _, c := range b {
		sum += c
	}
	b[at] = -sum
}

func TestParseEntryPoint(t *testing.T) {
	ep3, err := os.ReadFile("testdata/dell-r630/smbios_entry_point")
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile("testdata/dell-r630/DMI")
	if err != nil {
		t.Fatal(err)
	}
	if inv, err := Parse(entryPoint32(), table); err != nil || inv.SMBIOSVersion != "2.8" {
		t.Errorf("Parse(2.8 entry point) = %+v, %v; want version 2.8", inv, err)
	}
	badSum := bytes.Clone(ep3)
	badSum[0x07]++
	short := bytes.Clone(ep3)
	short[0x06] = 0x10
	long := bytes.Clone(ep3)
	long[0x06] = 0x40
	fixChecksum(long, 0x05)
	for name, tc := range map[string]struct {
		ep   []byte
		want error
	}{
		"empty":          {nil, ErrEntryPoint},
		"wrong anchor":   {[]byte("_DMI_ and more bytes than enough for it"), ErrEntryPoint},
		"truncated 3.x":  {ep3[:0x10], ErrEntryPoint},
		"truncated 2.x":  {entryPoint32()[:0x10], ErrEntryPoint},
		"checksum":       {badSum, ErrChecksum},
		"length too low": {short, ErrEntryPoint},
		"length too big": {long, ErrEntryPoint},
	} {
		if _, err := Parse(tc.ep, table); !errors.Is(err, tc.want) {
			t.Errorf("Parse(%s) = %v, want %v", name, err, tc.want)
		}
	}
	if _, err := Parse(ep3, table[:100]); err == nil {
		t.Error("Parse(truncated table) succeeded")
	}
	// A System Information structure (type 1) cut short before its UUID:
	// go-smbios panics on it.
	shortSystem := []byte{1, 9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 127, 4, 0, 0, 0, 0}
	if _, err := Parse(ep3, shortSystem); !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse(short system information) = %v, want ErrMalformed", err)
	}
}

func TestMemoryDeviceBytes(t *testing.T) {
	for _, tc := range []struct {
		size     uint16
		extended uint32
		want     uint64
	}{
		{0x0100, 0, 256 << 20},           // 256 MB
		{0x8100, 0, 256 << 10},           // 256 KB
		{0x7FFF, 0x8000, 32 << 30},       // 32 GB in Extended Size
		{0x7FFF, 0x8000_8000, 32 << 30},  // bit 31 reserved
		{0xFFFF, 0, 0},                   // unknown
		{0x4000, 0, 16 << 30},            // 16 GB
		{0x7FFF, 0x0002_0000, 128 << 30}, // 128 GB
		{0x7FFF, 0x7FFF_FFFF, 0x7FFF_FFFF << 20},
	} {
		if got := memoryDeviceBytes(tc.size, tc.extended); got != tc.want {
			t.Errorf("memoryDeviceBytes(%#x, %#x) = %d, want %d", tc.size, tc.extended, got, tc.want)
		}
	}
}

// Parse takes untrusted bytes: it never panics, and what it returns is
// bounded by its input.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"dell-r630", "supermicro-x9drw"} {
		ep, err := os.ReadFile(filepath.Join("testdata", dir, "smbios_entry_point"))
		if err != nil {
			f.Fatal(err)
		}
		table, err := os.ReadFile(filepath.Join("testdata", dir, "DMI"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ep, table)
		f.Add(entryPoint32(), table[:len(table)/2])
	}
	f.Fuzz(func(t *testing.T, ep, table []byte) {
		inv, err := Parse(ep, table)
		if err != nil {
			return
		}
		// A processor needs at least a 4-byte header in the table.
		if inv.Sockets > len(table)/4 || len(inv.Processors) > inv.Sockets {
			t.Errorf("Parse() = %d sockets, %d processors from a %d-byte table", inv.Sockets, len(inv.Processors), len(table))
		}
	})
}
