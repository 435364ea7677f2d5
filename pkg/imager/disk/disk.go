// Package disk writes the RigOS disk image, a GPT disk laid out for A/B
// updates (partition names in pkg/layout): RIGOS-ESP, the EFI system
// partition, with slot A's UKI at EFI/BOOT/BOOTX64.EFI (the
// removable-media path the firmware boots by default) and at
// EFI/RIGOS/rigos-a.efi, and room for slot B's; RIGOS-SYSTEM-A, slot A's
// read-only system partition (file system and dm-verity tree);
// RIGOS-SYSTEM-B, as large as A and left empty (zeros) for an update to
// fill; and RIGOS-STATE, shared by both slots and left empty for the
// booted system to format and encrypt. The layout and every identifier
// are derived from the build, so two builds of the same inputs are
// identical.
package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	pathpkg "path"
	"slices"
	"sort"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/rigos/rigos/pkg/layout"
)

const (
	sector = 512
	mib    = 1 << 20
	// MinESP is the smallest ESP: FAT32 needs 65,525 clusters.
	MinESP = 64 * mib
	// DefaultESP is the ESP's size when the UKIs need less: the layout is
	// fixed when a rig is installed, so later, larger UKIs must still fit
	// three times.
	DefaultESP = 128 * mib
	// DefaultSystemSlot is a system slot's size when the system image
	// needs less: room for later builds (an update writes the other slot,
	// which cannot grow), the NVIDIA user space and firmware among them.
	DefaultSystemSlot = 1 << 30
)

// Layout sizes the image.
type Layout struct {
	// ESP size in bytes: it must hold three UKIs, the two copies of
	// slot A's and slot B's. Default is max(DefaultESP, 3 × UKI + 16 MiB).
	ESP int64
	// System is each system slot's size in bytes. Default is
	// max(DefaultSystemSlot, the system image).
	System int64
	// State size in bytes. Default is 256 MiB.
	State int64
	// Seed derives the disk and partition GUIDs (the build's digest).
	Seed []byte
	// Files are extra files for the ESP, by path ("/RIGOS/plan.json",
	// layout.ESPPlan);
	// their folders are created.
	Files map[string][]byte
}

// ukiCopies is how many UKIs of this size the ESP must hold: slot A's
// at ESPBootUKI and at its SlotUKI, and slot B's.
const ukiCopies = 3

// Write creates the raw image at path (which must not exist) with uki,
// slot A's UKI, and slot A's system partition's contents; slot B's
// system partition is as large as A's and left empty. It returns slot
// A's system partition's offset in the image.
func Write(path string, uki, system []byte, l Layout) (int64, error) {
	if l.ESP == 0 {
		l.ESP = max(DefaultESP, ukiCopies*int64(len(uki))+16*mib)
	}
	if l.System == 0 {
		l.System = max(DefaultSystemSlot, int64(len(system)))
	}
	if l.State == 0 {
		l.State = 256 * mib
	}
	l.ESP = roundMiB(l.ESP)
	l.State = roundMiB(l.State)
	if int64(len(uki))*ukiCopies > l.ESP {
		return 0, fmt.Errorf("ESP of %d MiB cannot hold %d UKIs of %d MiB", l.ESP/mib, ukiCopies, len(uki)/mib)
	}
	espStart := int64(mib)
	sysSize := roundMiB(l.System)
	if int64(len(system)) > sysSize {
		return 0, fmt.Errorf("system image of %d MiB does not fit a system slot of %d MiB", len(system)/mib, sysSize/mib)
	}
	sysAStart := espStart + l.ESP
	sysBStart := sysAStart + sysSize
	stateStart := sysBStart + sysSize
	size := stateStart + l.State + mib // 1 MiB for the backup GPT
	d, err := diskfs.Create(path, size, diskfs.SectorSizeDefault)
	if err != nil {
		return 0, fmt.Errorf("creating %s: %w", path, err)
	}
	defer d.Close()
	table := &gpt.Table{
		LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true,
		GUID: guid(l.Seed, "disk"),
		Partitions: []*gpt.Partition{
			{Index: 1, Start: uint64(espStart / sector), End: uint64(sysAStart/sector - 1), Type: gpt.EFISystemPartition,
				Name: layout.ESPPartition, GUID: guid(l.Seed, "esp")},
			{Index: 2, Start: uint64(sysAStart / sector), End: uint64(sysBStart/sector - 1), Type: gpt.LinuxFilesystem,
				Name: layout.SystemPartition(layout.SlotA), GUID: guid(l.Seed, "system-a"), Attributes: 1 << 60}, // read-only
			{Index: 3, Start: uint64(sysBStart / sector), End: uint64(stateStart/sector - 1), Type: gpt.LinuxFilesystem,
				Name: layout.SystemPartition(layout.SlotB), GUID: guid(l.Seed, "system-b"), Attributes: 1 << 60}, // read-only
			{Index: 4, Start: uint64(stateStart / sector), End: uint64((stateStart+l.State)/sector - 1), Type: gpt.LinuxFilesystem,
				Name: layout.StatePartition, GUID: guid(l.Seed, "state")},
		},
	}
	if err := d.Partition(table); err != nil {
		return 0, fmt.Errorf("writing GPT: %w", err)
	}
	padded := append(bytes.Clone(system), make([]byte, sysSize-int64(len(system)))...)
	if _, err := d.WritePartitionContents(2, bytes.NewReader(padded)); err != nil {
		return 0, fmt.Errorf("writing the system partition: %w", err)
	}
	// Partition 3, slot B's, stays as diskfs.Create made it: zeros.
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: layout.ESPLabel, Reproducible: true})
	if err != nil {
		return 0, fmt.Errorf("formatting ESP: %w", err)
	}
	boot, slotA := "/"+layout.ESPBootUKI, "/"+layout.SlotUKI(layout.SlotA)
	for _, dir := range []string{"/EFI", pathpkg.Dir(boot), pathpkg.Dir(slotA)} {
		if err := fs.Mkdir(dir); err != nil {
			return 0, fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	files := map[string][]byte{boot: uki, slotA: uki}
	names := []string{boot, slotA}
	for name, data := range l.Files {
		if _, ok := files[name]; ok {
			return 0, fmt.Errorf("extra ESP file %s would replace a UKI", name)
		}
		files[name] = data
		names = append(names, name)
	}
	sort.Strings(names[2:]) // deterministic order
	for _, name := range names {
		if dir := pathpkg.Dir(name); dir != "/" {
			if err := fs.Mkdir(dir); err != nil {
				return 0, fmt.Errorf("creating %s: %w", dir, err)
			}
		}
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return 0, fmt.Errorf("creating %s: %w", name, err)
		}
		if _, err := f.Write(files[name]); err != nil {
			f.Close()
			return 0, fmt.Errorf("writing %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return 0, err
		}
	}
	return sysAStart, nil
}

// PartitionNames lists the GPT names of the image's partitions, in
// order: the ESP, slot A's and slot B's system partitions, the state
// partition.
func PartitionNames() []string {
	return []string{layout.ESPPartition, layout.SystemPartition(layout.SlotA),
		layout.SystemPartition(layout.SlotB), layout.StatePartition}
}

// partitionNames returns the names of t's partitions, in order.
func partitionNames(t *gpt.Table) []string {
	var out []string
	for _, p := range t.Partitions {
		out = append(out, p.Name)
	}
	return out
}

func roundMiB(v int64) int64 { return (v + mib - 1) / mib * mib }

// guid derives a stable RFC 4122 (version 4 layout) GUID.
func guid(seed []byte, what string) string {
	h := sha256.Sum256(append(append([]byte("rigos-disk\x00"), seed...), what...))
	u, _ := uuid.FromBytes(h[:16])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u.String()
}

// ReadUKI returns EFI/BOOT/BOOTX64.EFI (layout.ESPBootUKI) from a raw
// image, checking the partition table on the way: a truncated or
// half-written image, or one without the four RigOS partitions, is an
// error.
func ReadUKI(path string) ([]byte, error) {
	if err := checkComplete(path); err != nil {
		return nil, err
	}
	d, t, err := openTable(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if !slices.Equal(partitionNames(t), PartitionNames()) {
		return nil, fmt.Errorf("image has partitions %q, want the RigOS layout %q", partitionNames(t), PartitionNames())
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		return nil, fmt.Errorf("reading ESP: %w", err)
	}
	f, err := fs.OpenFile("/"+layout.ESPBootUKI, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", layout.ESPBootUKI, err)
	}
	defer f.Close()
	return io.ReadAll(f)
}

// openTable opens a raw image read-only with its intact primary GPT.
func openTable(path string) (*disk.Disk, *gpt.Table, error) {
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", path, err)
	}
	pt, err := d.GetPartitionTable()
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("reading partition table of %s: %w", path, err)
	}
	t, ok := pt.(*gpt.Table)
	if !ok || t.RecoveredFromBackup {
		d.Close()
		return nil, nil, fmt.Errorf("%s: image has no intact GPT", path)
	}
	return d, t, nil
}

// Partition returns the byte range of the partition named name in the
// raw image at path.
func Partition(path, name string) (start, size int64, err error) {
	d, t, err := openTable(path)
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	for _, p := range t.Partitions {
		if p.Name == name {
			return p.GetStart(), p.GetSize(), nil
		}
	}
	return 0, 0, fmt.Errorf("%s: no %s partition", path, name)
}

// checkComplete verifies that the image is as long as its primary GPT
// header says and that the backup header is at its end: a copy that was
// cut short fails here.
func checkComplete(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, sector)
	if _, err := f.ReadAt(hdr, sector); err != nil || string(hdr[:8]) != "EFI PART" {
		return fmt.Errorf("%s: no primary GPT header", path)
	}
	alt := int64(binary.LittleEndian.Uint64(hdr[32:40]))
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if want := (alt + 1) * sector; st.Size() != want {
		return fmt.Errorf("%s: image is %d bytes, its GPT says %d: incomplete or damaged copy", path, st.Size(), want)
	}
	if _, err := f.ReadAt(hdr, alt*sector); err != nil || string(hdr[:8]) != "EFI PART" {
		return fmt.Errorf("%s: backup GPT header missing: incomplete copy", path)
	}
	return nil
}
