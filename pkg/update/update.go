// Package update writes a new RigOS build into the slot a node did not
// boot from: the build's system image into that slot's system partition
// and the slot's UKI onto the ESP (layout.SlotUKI). The slot the node
// runs from, and the ESP's other files, are never touched, so an update
// cut short at any point (a lost connection, a power cut) leaves the
// node booting what it booted before.
//
// The files arrive in order, in parts (the verifier's UpdateChunks):
// first the system image, then the UKI. Nothing is made bootable until
// both have arrived with the expected sizes and SHA-256 digests, the
// system partition has been read back from the disk (not the page cache)
// and matched, and the UKI's measured command line names the slot being
// written. The slot's old UKI is removed before its system partition is
// overwritten, and the new one is renamed into place last, so the slot's
// boot entry never pairs a UKI with a half-written partition.
package update

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/imager/uki"
	"github.com/rigos/rigos/pkg/layout"
)

// Part is one of an update's files, in the order they are sent.
type Part int

// The parts.
const (
	System Part = iota + 1
	UKI
)

func (p Part) String() string {
	switch p {
	case System:
		return "system image"
	case UKI:
		return "UKI"
	}
	return fmt.Sprintf("part %d", int(p))
}

// Spec is what the update must deliver: each part's size and SHA-256.
type Spec struct {
	SystemSize   int64
	SystemSHA256 []byte
	UKISize      int64
	UKISHA256    []byte
}

// MaxUKI bounds a UKI: the ESP holds three (pkg/imager/disk).
const MaxUKI = 256 << 20

// ErrDigest means a part arrived whole but its SHA-256 differs, or the
// system partition did not read back what was written.
var ErrDigest = errors.New("digest mismatch")

// Options for Start.
type Options struct {
	// Slot is the slot being written: the one the node did not boot.
	Slot layout.Slot
	// SystemPartition is that slot's system partition: a block device,
	// or a file in tests. Its size bounds the system image.
	SystemPartition string
	// ESP is where the EFI system partition is mounted, writable.
	ESP  string
	Spec Spec
}

// Writer receives one update's parts; see the package documentation.
type Writer struct {
	o      Options
	sys    *os.File
	uki    *os.File
	ukiTmp string
	part   Part  // the part expected next
	off    int64 // bytes of it received
	sum    hash.Hash
	start  time.Time
	done   bool
}

// Result describes a written update.
type Result struct {
	// Bytes is how much was written (and the system image read back).
	Bytes int64
	// Write is how long receiving and writing took, Verify reading back.
	Write, Verify time.Duration
}

// Start checks spec against the slot and opens it for writing: the
// slot's old UKI is removed, so nothing boots the partition while it is
// rewritten.
func Start(o Options) (*Writer, error) {
	s := o.Spec
	if s.SystemSize <= 0 || s.UKISize <= 0 || len(s.SystemSHA256) != sha256.Size || len(s.UKISHA256) != sha256.Size {
		return nil, errors.New("update without the sizes and SHA-256 digests of its system image and UKI")
	}
	if s.UKISize > MaxUKI {
		return nil, fmt.Errorf("UKI of %d bytes is larger than the %d a UKI may take on the ESP", s.UKISize, MaxUKI)
	}
	if _, err := layout.ParseSlot(string(o.Slot)); err != nil {
		return nil, err
	}
	sys, err := openExclusive(o.SystemPartition)
	if err != nil {
		return nil, fmt.Errorf("opening slot %s's system partition: %w (is it in use?)", o.Slot, err)
	}
	room, err := sys.Seek(0, io.SeekEnd)
	if err != nil {
		sys.Close()
		return nil, err
	}
	if s.SystemSize > room {
		sys.Close()
		return nil, fmt.Errorf("system image of %d bytes does not fit slot %s's partition of %d bytes", s.SystemSize, o.Slot, room)
	}
	final := filepath.Join(o.ESP, layout.SlotUKI(o.Slot))
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		sys.Close()
		return nil, fmt.Errorf("the ESP: %w", err)
	}
	if err := os.Remove(final); err != nil && !errors.Is(err, os.ErrNotExist) {
		sys.Close()
		return nil, fmt.Errorf("removing slot %s's old UKI: %w", o.Slot, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		sys.Close()
		return nil, err
	}
	tmp := final + ".new"
	uki, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		sys.Close()
		return nil, fmt.Errorf("creating the UKI on the ESP: %w", err)
	}
	return &Writer{o: o, sys: sys, uki: uki, ukiTmp: tmp, part: System, sum: sha256.New(), start: time.Now()}, nil
}

// Expecting returns the part and offset the next Write must carry.
func (w *Writer) Expecting() (Part, int64) { return w.part, w.off }

// Received returns the bytes received so far, and in all.
func (w *Writer) Received() (done, total int64) {
	total = w.o.Spec.SystemSize + w.o.Spec.UKISize
	switch w.part {
	case System:
		return w.off, total
	case UKI:
		return w.o.Spec.SystemSize + w.off, total
	}
	return total, total
}

// Write takes the next data of part at off: parts in order, each from
// offset 0 with no gap or overlap, never past its size. When a part is
// complete its digest is checked. It returns whether the update is
// complete (Finish may run).
func (w *Writer) Write(part Part, off int64, data []byte) (bool, error) {
	if w.done {
		return false, errors.New("update already complete")
	}
	if part != w.part || off != w.off {
		return false, fmt.Errorf("got %s at offset %d, want %s at offset %d", part, off, w.part, w.off)
	}
	size, want, f := w.o.Spec.SystemSize, w.o.Spec.SystemSHA256, w.sys
	if part == UKI {
		size, want, f = w.o.Spec.UKISize, w.o.Spec.UKISHA256, w.uki
	}
	if int64(len(data)) > size-off {
		return false, fmt.Errorf("%s longer than its %d bytes", part, size)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		return false, fmt.Errorf("writing the %s at %d: %w", part, off, err)
	}
	w.sum.Write(data)
	w.off += int64(len(data))
	if w.off < size {
		return false, nil
	}
	if got := w.sum.Sum(nil); !bytes.Equal(got, want) {
		return false, fmt.Errorf("%w: the %s's SHA-256 is %x, want %x", ErrDigest, part, got, want)
	}
	if part == System {
		w.part, w.off, w.sum = UKI, 0, sha256.New()
		return false, nil
	}
	w.done = true
	return true, nil
}

// Finish makes a complete update bootable: it flushes the system
// partition, reads it back past the page cache and checks its digest,
// checks the UKI names the slot, and renames the UKI into place. The
// caller then points the slot's boot entry at it.
func (w *Writer) Finish() (Result, error) {
	if !w.done {
		return Result{}, fmt.Errorf("update incomplete: want %s at offset %d", w.part, w.off)
	}
	res := Result{Bytes: w.o.Spec.SystemSize + w.o.Spec.UKISize}
	if err := w.sys.Sync(); err != nil {
		return res, fmt.Errorf("flushing slot %s: %w", w.o.Slot, err)
	}
	res.Write = time.Since(w.start)
	start := time.Now()
	dropCache(w.sys)
	if err := checkDigest(w.sys, w.o.Spec.SystemSize, w.o.Spec.SystemSHA256); err != nil {
		return res, fmt.Errorf("slot %s's system partition: %w", w.o.Slot, err)
	}
	if err := w.uki.Sync(); err != nil {
		return res, fmt.Errorf("flushing the UKI: %w", err)
	}
	dropCache(w.uki)
	if err := checkDigest(w.uki, w.o.Spec.UKISize, w.o.Spec.UKISHA256); err != nil {
		return res, fmt.Errorf("the UKI on the ESP: %w", err)
	}
	res.Verify = time.Since(start)
	slot, err := UKISlot(io.NewSectionReader(w.uki, 0, w.o.Spec.UKISize))
	if err != nil {
		return res, err
	}
	if slot != w.o.Slot {
		return res, fmt.Errorf("the UKI boots slot %s, but the update writes slot %s", slot, w.o.Slot)
	}
	if err := w.uki.Close(); err != nil {
		return res, err
	}
	final := filepath.Join(w.o.ESP, layout.SlotUKI(w.o.Slot))
	if err := os.Rename(w.ukiTmp, final); err != nil {
		return res, fmt.Errorf("putting the UKI in place: %w", err)
	}
	w.ukiTmp = ""
	return res, syncDir(filepath.Dir(final))
}

// Close releases the files; an unfinished UKI is removed.
func (w *Writer) Close() error {
	err := w.sys.Close()
	w.uki.Close()
	if w.ukiTmp != "" {
		if rerr := os.Remove(w.ukiTmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

func checkDigest(f *os.File, n int64, want []byte) error {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: read back SHA-256 %x, want %x", ErrDigest, got, want)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flushing %s: %w", dir, err)
	}
	return nil
}

// UKISlot returns the slot a UKI's measured command line (its .cmdline
// section) names.
func UKISlot(r io.ReaderAt) (layout.Slot, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("the UKI is not a PE image: %w", err)
	}
	s := f.Section(".cmdline")
	if s == nil {
		return "", errors.New("the UKI has no .cmdline section")
	}
	if s.Size > 64<<10 {
		return "", fmt.Errorf("the UKI's .cmdline section is %d bytes", s.Size)
	}
	b, err := s.Data()
	if err != nil {
		return "", fmt.Errorf("reading the UKI's .cmdline: %w", err)
	}
	// The section's file size is rounded up to the PE file alignment.
	b = b[:min(uint32(len(b)), s.VirtualSize)]
	args, err := cmdline.Parse(string(bytes.TrimRight(b, "\x00")))
	if err != nil {
		return "", fmt.Errorf("the UKI's command line: %w", err)
	}
	v, ok := args[layout.SlotParam]
	if !ok {
		return "", fmt.Errorf("the UKI's command line names no %s", layout.SlotParam)
	}
	return layout.ParseSlot(v)
}

// PredictPCR11 returns the PCR 11 value a UKI leaves when systemd-stub
// boots it: its measured sections (uki.PredictPCR11), each as large as
// its virtual size says.
func PredictPCR11(r io.ReaderAt) ([]byte, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("the UKI is not a PE image: %w", err)
	}
	var sections []uki.Section
	for _, s := range f.Sections {
		if !uki.Measured(s.Name) {
			continue
		}
		b, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("reading the UKI's %s: %w", s.Name, err)
		}
		if uint32(len(b)) < s.VirtualSize {
			return nil, fmt.Errorf("the UKI's %s is %d bytes in the file, %d in memory", s.Name, len(b), s.VirtualSize)
		}
		sections = append(sections, uki.Section{Name: s.Name, Data: b[:s.VirtualSize]})
	}
	if len(sections) == 0 {
		return nil, errors.New("the UKI has no measured section")
	}
	return uki.PredictPCR11(sections), nil
}
