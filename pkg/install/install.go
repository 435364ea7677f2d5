// Package install copies a booted RigOS disk (the stick a supplier
// flashed) onto an internal disk, so the rig boots from that disk and the
// stick can be removed.
//
// The target gets the same GPT layout as the source (pkg/imager/disk):
// the ESP and both system slots at the same offsets and sizes, with new
// random disk and partition GUIDs, and the state partition stretched to
// the end of the disk and left blank, for the first boot from the disk
// to create and seal. The ESP and the booted slot's system partition are
// copied byte for byte and read back; the other slot stays as the target
// had it (an update writes it whole). The GPT is written last, so a copy
// cut short leaves a disk with no RigOS partitions, never a half-written
// one that boots.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/efiboot"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/statedisk"
)

// Sizes.
const (
	sector = 512
	mib    = 1 << 20
	// DefaultMinState is the smallest state partition an install leaves:
	// workload images and scratch space live there.
	DefaultMinState = 1 << 30
	// chunk is how much is copied and compared at a time.
	chunk = 4 * mib
	// edge is how much of each end of the target must be zeros for it to
	// count as empty: where partition tables and most file system and
	// RAID signatures are.
	edge = mib
)

// Errors a caller may tell apart.
var (
	// ErrNotEmpty: the target holds data and Wipe was not given.
	ErrNotEmpty = errors.New("the target disk is not empty")
	// ErrTooSmall: the target cannot hold the layout and a state
	// partition of MinState.
	ErrTooSmall = errors.New("the target disk is too small")
	// ErrVerify: what was read back differs from the source.
	ErrVerify = errors.New("the target disk did not read back what was written")
)

// Options for Install.
type Options struct {
	// Source is the booted disk (a block device, or an image file in
	// tests); it is only read.
	Source string
	// Target is the disk to install to; opened exclusively, so a disk in
	// use (mounted, or under device-mapper) is refused.
	Target string
	// Slot is the booted slot: its system partition is copied.
	Slot layout.Slot
	// Wipe installs over a target that is not empty.
	Wipe bool
	// MinState is the smallest state partition accepted. Default is
	// DefaultMinState.
	MinState int64
	// Progress, if set, is called after each chunk with the bytes
	// written so far and in all.
	Progress func(done, total int64)
}

// Result describes a finished install.
type Result struct {
	// Bytes is how much was copied (and read back).
	Bytes int64
	// Write and Verify are how long copying and reading back took.
	Write, Verify time.Duration
	// ESP is the target's EFI system partition, for its boot entry.
	ESP efiboot.Partition
	// TargetSize is the target's size in bytes.
	TargetSize int64
}

// Install copies the booted RigOS disk to the target; see the package
// documentation.
func Install(o Options) (Result, error) {
	if o.MinState == 0 {
		o.MinState = DefaultMinState
	}
	src, err := os.Open(o.Source)
	if err != nil {
		return Result{}, fmt.Errorf("opening the boot disk: %w", err)
	}
	defer src.Close()
	parts, err := readLayout(src)
	if err != nil {
		return Result{}, fmt.Errorf("boot disk %s: %w", o.Source, err)
	}
	slotName := layout.SystemPartition(o.Slot)
	slot, ok := parts[slotName]
	if !ok {
		return Result{}, fmt.Errorf("boot disk %s has no partition %s", o.Source, slotName)
	}
	esp, state := parts[layout.ESPPartition], parts[layout.StatePartition]

	dst, err := openExclusive(o.Target)
	if err != nil {
		return Result{}, fmt.Errorf("opening %s: %w (is it mounted or in use?)", o.Target, err)
	}
	defer dst.Close()
	if a, err := src.Stat(); err == nil {
		if b, err := dst.Stat(); err == nil && sameDisk(a, b) {
			return Result{}, fmt.Errorf("%s is the boot disk itself", o.Target)
		}
	}
	size, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return Result{}, err
	}
	stateStart := int64(state.Start) * sector
	if need := stateStart + o.MinState + mib; size < need {
		return Result{}, fmt.Errorf("%w: %s has %d MiB; RigOS needs %d MiB (%d MiB for the ESP and two system slots, %d MiB of state at least)",
			ErrTooSmall, o.Target, size/mib, need/mib, stateStart/mib, o.MinState/mib)
	}
	if !o.Wipe {
		if off, err := firstData(dst, size); err != nil {
			return Result{}, err
		} else if off >= 0 {
			return Result{}, fmt.Errorf("%w: %s has data at byte %d; install with wipe to overwrite it (everything on it is lost)", ErrNotEmpty, o.Target, off)
		}
	}

	// No partition table while the partitions are copied: a table left
	// from before (a wiped disk, an earlier install) could point at
	// half-written partitions if the copy is cut short. The table is
	// written last, once everything else is on the disk.
	if err := clearTables(dst, size); err != nil {
		return Result{}, err
	}
	copies := []*gpt.Partition{esp, slot}
	var total int64
	for _, p := range copies {
		total += p.GetSize()
	}
	res := Result{TargetSize: size, Bytes: total}
	start := time.Now()
	var done int64
	for _, p := range copies {
		if err := copyRange(dst, src, int64(p.Start)*sector, p.GetSize(), func(n int64) {
			done += n
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}); err != nil {
			return res, fmt.Errorf("copying %s: %w", p.Name, err)
		}
	}
	// A blank state header: the first boot from the disk creates the
	// volume (statedisk.ErrBlank), whatever the disk held before.
	if _, err := dst.WriteAt(make([]byte, statedisk.MetadataSize), stateStart); err != nil {
		return res, fmt.Errorf("clearing the state header: %w", err)
	}
	if err := dst.Sync(); err != nil { // the data is on the disk before the table
		return res, fmt.Errorf("flushing %s: %w", o.Target, err)
	}
	if err := writeTable(dst, targetTable(parts, size)); err != nil {
		return res, err
	}
	if err := dst.Sync(); err != nil {
		return res, fmt.Errorf("flushing %s: %w", o.Target, err)
	}
	res.Write = time.Since(start)

	// A disk that does not read back what was written is left without a
	// partition table, so nothing boots it.
	start = time.Now()
	if err := verify(dst, src, parts, copies); err != nil {
		return res, errors.Join(err, clearTables(dst, size))
	}
	res.Verify = time.Since(start)
	got, err := readLayout(dst)
	if err != nil {
		return res, err
	}
	res.ESP, err = bootPartition(got[layout.ESPPartition])
	return res, err
}

// Partitions reads the RigOS partitions of a disk (a block device, or an
// image file), by name, as a boot entry names them.
func Partitions(path string) (map[string]efiboot.Partition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	parts, err := readLayout(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]efiboot.Partition{}
	for name, p := range parts {
		if out[name], err = bootPartition(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func bootPartition(g *gpt.Partition) (efiboot.Partition, error) {
	guid, err := uuid.Parse(g.GUID)
	if err != nil {
		return efiboot.Partition{}, fmt.Errorf("partition %s's GUID %q: %w", g.Name, g.GUID, err)
	}
	return efiboot.Partition{Number: uint32(g.Index), StartLBA: g.Start, SizeLBA: g.End - g.Start + 1, GUID: guid}, nil
}

// verify reads back the copied partitions and the partition table.
func verify(dst, src *os.File, parts map[string]*gpt.Partition, copies []*gpt.Partition) error {
	dropCache(dst)
	for _, p := range copies {
		if err := compareRange(dst, src, int64(p.Start)*sector, p.GetSize()); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	got, err := readLayout(dst)
	if err != nil {
		return fmt.Errorf("%w: its partition table: %w", ErrVerify, err)
	}
	for name, want := range parts {
		g := got[name]
		if name != layout.StatePartition && (g.Start != want.Start || g.End != want.End) {
			return fmt.Errorf("%w: partition %s at sectors %d-%d, want %d-%d", ErrVerify, name, g.Start, g.End, want.Start, want.End)
		}
	}
	return nil
}

// clearTables zeroes the first and last edge bytes of a disk of size
// bytes, where its partition tables are, and flushes them.
func clearTables(f *os.File, size int64) error {
	zeros := make([]byte, edge)
	for _, off := range []int64{0, max(0, size-edge)} {
		if _, err := f.WriteAt(zeros, off); err != nil {
			return fmt.Errorf("clearing the partition tables: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("clearing the partition tables: %w", err)
	}
	return nil
}

// readLayout reads the RigOS partitions from the GPT of f, by name; each
// of the four must be there once.
func readLayout(f *os.File) (map[string]*gpt.Partition, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	// The table is checked before go-diskfs sizes buffers from it.
	if err := blockdev.CheckGPT(f, size); err != nil {
		return nil, fmt.Errorf("its partition table: %w", err)
	}
	d, err := diskfs.OpenBackend(file.New(f, true), diskfs.WithSectorSize(sector))
	if err != nil {
		return nil, err
	}
	pt, err := d.GetPartitionTable()
	if err != nil {
		return nil, fmt.Errorf("reading its partition table: %w", err)
	}
	t, ok := pt.(*gpt.Table)
	if !ok {
		return nil, fmt.Errorf("partition table is %s, not GPT", pt.Type())
	}
	if t.RecoveredFromBackup {
		return nil, errors.New("its primary GPT is damaged (read from the backup)")
	}
	if t.LogicalSectorSize != sector {
		return nil, fmt.Errorf("logical sectors of %d bytes: RigOS installs to 512-byte-sector disks only", t.LogicalSectorSize)
	}
	out := map[string]*gpt.Partition{}
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		if _, dup := out[p.Name]; dup {
			return nil, fmt.Errorf("two partitions named %s", p.Name)
		}
		out[p.Name] = p
	}
	for _, name := range []string{layout.ESPPartition, layout.SystemPartition(layout.SlotA), layout.SystemPartition(layout.SlotB), layout.StatePartition} {
		if out[name] == nil {
			return nil, fmt.Errorf("no partition named %s: not a RigOS disk", name)
		}
	}
	return out, nil
}

// targetTable is the source's layout with new GUIDs and the state
// partition reaching the end of a disk of size bytes (less the backup
// GPT).
func targetTable(src map[string]*gpt.Partition, size int64) *gpt.Table {
	t := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, GUID: uuid.NewString()}
	lastUsable := uint64(size/sector) - 34 // the backup GPT: 32 sectors of entries and its header
	for i, name := range []string{layout.ESPPartition, layout.SystemPartition(layout.SlotA), layout.SystemPartition(layout.SlotB), layout.StatePartition} {
		p := src[name]
		end := p.End
		if name == layout.StatePartition {
			end = lastUsable
		}
		t.Partitions = append(t.Partitions, &gpt.Partition{Index: i + 1, Start: p.Start, End: end, Type: p.Type,
			Name: p.Name, GUID: uuid.NewString(), Attributes: p.Attributes})
	}
	return t
}

func writeTable(f *os.File, t *gpt.Table) error {
	d, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithOpenMode(diskfs.ReadWriteExclusive), diskfs.WithSectorSize(sector))
	if err != nil {
		return err
	}
	if err := d.Partition(t); err != nil {
		return fmt.Errorf("writing the partition table: %w", err)
	}
	return nil
}

// firstData returns the offset of the first non-zero byte in the first
// and last edge bytes of f (size bytes), or -1 when they are all zeros.
func firstData(f *os.File, size int64) (int64, error) {
	buf := make([]byte, edge)
	for _, off := range []int64{0, max(0, size-edge)} {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("reading the target: %w", err)
		}
		if i := bytes.IndexFunc(buf[:n], func(r rune) bool { return r != 0 }); i >= 0 {
			return off + int64(i), nil
		}
	}
	return -1, nil
}

// copyRange copies n bytes at off from src to dst, calling progress with
// each chunk's length.
func copyRange(dst, src *os.File, off, n int64, progress func(int64)) error {
	buf := make([]byte, chunk)
	for done := int64(0); done < n; {
		b := buf[:min(chunk, n-done)]
		if _, err := src.ReadAt(b, off+done); err != nil {
			return fmt.Errorf("reading at %d: %w", off+done, err)
		}
		if _, err := dst.WriteAt(b, off+done); err != nil {
			return fmt.Errorf("writing at %d: %w", off+done, err)
		}
		done += int64(len(b))
		progress(int64(len(b)))
	}
	return nil
}

// compareRange compares n bytes at off of the two files.
func compareRange(dst, src *os.File, off, n int64) error {
	a, b := make([]byte, chunk), make([]byte, chunk)
	for done := int64(0); done < n; {
		l := min(chunk, n-done)
		if _, err := src.ReadAt(a[:l], off+done); err != nil {
			return fmt.Errorf("reading the boot disk at %d: %w", off+done, err)
		}
		if _, err := dst.ReadAt(b[:l], off+done); err != nil {
			return fmt.Errorf("%w: reading at %d: %w", ErrVerify, off+done, err)
		}
		if !bytes.Equal(a[:l], b[:l]) {
			return fmt.Errorf("%w: bytes %d-%d differ", ErrVerify, off+done, off+done+l)
		}
		done += l
	}
	return nil
}
