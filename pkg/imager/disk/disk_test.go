package disk

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/rigos/rigos/pkg/layout"
)

func TestWriteReproducibleAndReadable(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1790000000")
	uki := bytes.Repeat([]byte("UKI!"), 300_000)
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		p := filepath.Join(dir, "img"+string(rune('a'+i)))
		if _, err := Write(p, uki, []byte("system"), Layout{Seed: []byte("build-1"), State: 8 << 20, System: 2 << 20}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Fatal("two images of the same inputs differ")
	}
	p := filepath.Join(dir, "imga")
	got, err := ReadUKI(p)
	if err != nil || !bytes.Equal(got, uki) {
		t.Fatalf("ReadUKI() = %d bytes, %v; want the UKI back", len(got), err)
	}
	if _, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.Command("sgdisk", "-v", p).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk -v: %v: %s", err, out)
		}
	}
}

// A half-written image is refused with a clear error, not half-read.
func TestReadUKIRejectsDamagedImages(t *testing.T) {
	uki := bytes.Repeat([]byte("UKI!"), 1000)
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	if _, err := Write(p, uki, []byte("system"), Layout{Seed: []byte("x"), State: 8 << 20, System: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for name, img := range map[string][]byte{
		"truncated": b[:len(b)/3],
		"no GPT":    append(make([]byte, 2*512), b[2*512:]...),
		"empty":     nil,
	} {
		q := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(q, img, 0o600)
		if got, err := ReadUKI(q); err == nil && bytes.Equal(got, uki) {
			t.Errorf("ReadUKI(%s) succeeded", name)
		}
	}
}

// The A/B layout: the ESP, slot A's system partition holding the system
// image, slot B's of the same size and empty, the state partition; slot
// A's UKI at the firmware's default path and under its slot's name.
func TestWriteABLayout(t *testing.T) {
	uki := bytes.Repeat([]byte("UKI!"), 300_000)
	system := bytes.Repeat([]byte("system"), 300_000) // 1.7 MiB: two MiB once rounded
	p := filepath.Join(t.TempDir(), "img")
	plan := []byte(`{"plan":1}`)
	off, err := Write(p, uki, system, Layout{Seed: []byte("build-1"), State: 8 << 20, System: 2 << 20,
		Files: map[string][]byte{"/" + layout.ESPPlan: plan}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	parts := readTable(t, p).Partitions
	var names []string
	for _, pt := range parts {
		names = append(names, pt.Name)
	}
	want := []string{"RIGOS-ESP", "RIGOS-SYSTEM-A", "RIGOS-SYSTEM-B", "RIGOS-STATE"}
	if !slices.Equal(names, want) || !slices.Equal(PartitionNames(), want) {
		t.Fatalf("partitions = %q, PartitionNames() = %q, want %q", names, PartitionNames(), want)
	}
	esp, sysA, sysB, state := parts[0], parts[1], parts[2], parts[3]
	for i, pt := range parts {
		if pt.Index != i+1 {
			t.Errorf("partition %s has index %d, want %d", pt.Name, pt.Index, i+1)
		}
		if i > 0 && pt.Start != parts[i-1].End+1 {
			t.Errorf("partition %s starts at sector %d, want %d (right after %s)", pt.Name, pt.Start, parts[i-1].End+1, parts[i-1].Name)
		}
		if pt.GetStart()%mib != 0 || pt.GetSize()%mib != 0 {
			t.Errorf("partition %s at %d, %d bytes: want MiB-aligned", pt.Name, pt.GetStart(), pt.GetSize())
		}
	}
	if esp.Type != gpt.EFISystemPartition {
		t.Errorf("%s type = %s, want the EFI system partition", esp.Name, esp.Type)
	}
	if got := esp.GetSize(); got < 3*int64(len(uki)) || got < MinESP {
		t.Errorf("ESP is %d bytes, want room for three UKIs of %d bytes and at least %d", got, len(uki), MinESP)
	}
	if sysA.GetSize() != 2*mib || sysB.GetSize() != sysA.GetSize() {
		t.Errorf("system partitions A, B are %d, %d bytes, want 2 MiB each", sysA.GetSize(), sysB.GetSize())
	}
	for _, pt := range []*gpt.Partition{sysA, sysB} {
		if pt.Attributes != 1<<60 {
			t.Errorf("%s attributes = %#x, want read-only (bit 60)", pt.Name, pt.Attributes)
		}
	}
	if state.GetSize() != 8<<20 {
		t.Errorf("state partition is %d bytes, want %d", state.GetSize(), 8<<20)
	}
	guids := map[string]bool{}
	for _, pt := range parts {
		guids[pt.GUID] = true
	}
	if len(guids) != len(parts) {
		t.Errorf("partition GUIDs are not all different: %v", guids)
	}
	// Slot A holds the system image, padded with zeros; slot B and the
	// state partition are zeros.
	if off != sysA.GetStart() {
		t.Errorf("Write() = offset %d, want slot A's start %d", off, sysA.GetStart())
	}
	a := raw[sysA.GetStart() : sysA.GetStart()+sysA.GetSize()]
	if !bytes.Equal(a[:len(system)], system) || !allZero(a[len(system):]) {
		t.Errorf("%s does not hold the system image followed by zeros", sysA.Name)
	}
	for _, pt := range []*gpt.Partition{sysB, state} {
		if !allZero(raw[pt.GetStart() : pt.GetStart()+pt.GetSize()]) {
			t.Errorf("%s is not empty", pt.Name)
		}
	}
	// The two UKI copies are the UKI; the plan is where the agent reads it.
	for _, name := range []string{layout.ESPBootUKI, layout.SlotUKI(layout.SlotA), layout.ESPPlan} {
		want := uki
		if name == layout.ESPPlan {
			want = plan
		}
		if got := readESPFile(t, p, name); !bytes.Equal(got, want) {
			t.Errorf("ESP file %s: %d bytes, want %d", name, len(got), len(want))
		}
	}
	if got, err := ReadUKI(p); err != nil || !bytes.Equal(got, uki) {
		t.Errorf("ReadUKI() = %d bytes, %v; want the UKI back", len(got), err)
	}
}

// An ESP too small for three UKIs (slot A's two copies and slot B's) is
// refused, and so is an extra ESP file in a UKI's place.
func TestWriteRefusesBadLayouts(t *testing.T) {
	uki := bytes.Repeat([]byte("U"), 30<<20)
	dir := t.TempDir()
	if _, err := Write(filepath.Join(dir, "small"), uki, []byte("system"), Layout{ESP: 80 << 20, State: 8 << 20, System: 2 << 20}); err == nil {
		t.Error("Write() with an 80 MiB ESP for three 30 MiB UKIs succeeded")
	}
	for _, name := range []string{layout.ESPBootUKI, layout.SlotUKI(layout.SlotA)} {
		_, err := Write(filepath.Join(dir, "clash"+filepath.Base(name)), []byte("uki"), []byte("system"),
			Layout{State: 8 << 20, System: 2 << 20, Files: map[string][]byte{"/" + name: []byte("other")}})
		if err == nil {
			t.Errorf("Write() with an extra ESP file /%s succeeded", name)
		}
	}
}

// An image of the layout before A/B (ESP, RIGOS-SYSTEM, RIGOS-STATE) is
// not a RigOS image any more.
func TestReadUKIRejectsOldLayout(t *testing.T) {
	p := filepath.Join(t.TempDir(), "old")
	d, err := diskfs.Create(p, 80<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{
			{Index: 1, Start: 2048, End: 2048 + 2*65536 - 1, Type: gpt.EFISystemPartition, Name: layout.ESPPartition},
			{Index: 2, Start: 2048 + 2*65536, End: 2048 + 2*65536 + 2047, Type: gpt.LinuxFilesystem, Name: "RIGOS-SYSTEM"},
			{Index: 3, Start: 2048 + 2*65536 + 2048, End: 2048 + 2*65536 + 4095, Type: gpt.LinuxFilesystem, Name: layout.StatePartition},
		}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadUKI(p); err == nil || !strings.Contains(err.Error(), "RIGOS-SYSTEM-A") {
		t.Errorf("ReadUKI(old layout) = %v, want an error naming the RigOS layout", err)
	}
}

func readTable(t *testing.T, path string) *gpt.Table {
	t.Helper()
	d, table, err := openTable(path)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	return table
}

// readESPFile returns the file at name, relative to the ESP's root.
func readESPFile(t *testing.T, path, name string) []byte {
	t.Helper()
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		t.Fatalf("opening /%s on the ESP: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func allZero(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// By default the slots leave room for later, larger builds (an update
// writes the other slot, which cannot grow once a rig is installed); a
// system image larger than its slot is refused.
func TestSlotRoom(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(filepath.Join(dir, "big"), []byte("uki"), make([]byte, 3<<20), Layout{State: 8 << 20, System: 2 << 20}); err == nil {
		t.Error("Write() of a 3 MiB system image into 2 MiB slots succeeded")
	}
	if DefaultSystemSlot < 1<<30 || DefaultESP < 3*30<<20 {
		t.Errorf("default slots %d MiB, ESP %d MiB: no room for later builds", DefaultSystemSlot>>20, DefaultESP>>20)
	}
}
