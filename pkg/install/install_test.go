package install

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"github.com/rigos/rigos/pkg/blockdev"
	"github.com/rigos/rigos/pkg/imager/disk"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/statedisk"
)

// stick writes a small RigOS image (64 MiB ESP, 16 MiB slots, 32 MiB of
// state) as a supplier's stick holds one, and returns its path, UKI and
// system partition contents.
func stick(t testing.TB) (string, []byte, []byte) {
	t.Helper()
	uki := bytes.Repeat([]byte("UKI!"), 1<<18)            // 1 MiB
	system := bytes.Repeat([]byte("erofs+verity"), 1<<20) // 12 MiB
	p := filepath.Join(t.TempDir(), "stick.raw")
	if _, err := disk.Write(p, uki, system, disk.Layout{ESP: disk.MinESP, System: 16 * mib, State: 32 * mib, Seed: []byte("test")}); err != nil {
		t.Fatal(err)
	}
	return p, uki, system
}

// blank makes an empty target of size bytes (sparse).
func blank(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

const testMinState = 16 * mib

func TestInstall(t *testing.T) {
	src, uki, system := stick(t)
	dst := blank(t, 160*mib)
	var progress []int64
	r, err := Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState,
		Progress: func(done, total int64) { progress = append(progress, done) }})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(disk.MinESP + 16*mib); r.Bytes != want || progress[len(progress)-1] != want {
		t.Errorf("copied %d bytes (progress ended at %d), want the ESP and slot A: %d", r.Bytes, progress[len(progress)-1], want)
	}
	// The disk is a complete RigOS disk: its UKI reads back through the
	// ESP's file system, slot A holds the system partition.
	got, err := disk.ReadUKI(dst)
	if err != nil || !bytes.Equal(got, uki) {
		t.Fatalf("UKI on the target: %d bytes, %v", len(got), err)
	}
	start, size, err := disk.Partition(dst, layout.SystemPartition(layout.SlotA))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(system))
	f, _ := os.Open(dst)
	defer f.Close()
	if _, err := f.ReadAt(b, start); err != nil || !bytes.Equal(b, system) || size != 16*mib {
		t.Errorf("slot A on the target: size %d, contents equal %t, %v", size, bytes.Equal(b, system), err)
	}
	// New GUIDs; the state partition reaches the end and is blank.
	srcParts, dstParts := layoutOf(t, src), layoutOf(t, dst)
	for name, p := range dstParts {
		if strings.EqualFold(p.GUID, srcParts[name].GUID) {
			t.Errorf("%s kept the stick's GUID %s", name, p.GUID)
		}
	}
	st := dstParts[layout.StatePartition]
	if st.End != uint64(160*mib/sector-34) {
		t.Errorf("state partition ends at sector %d, want %d", st.End, 160*mib/sector-34)
	}
	meta := make([]byte, statedisk.MetadataSize)
	if _, err := f.ReadAt(meta, int64(st.Start)*sector); err != nil {
		t.Fatal(err)
	}
	if _, err := statedisk.Read(meta); !errors.Is(err, statedisk.ErrBlank) {
		t.Errorf("state header on the target: %v, want blank", err)
	}
	esp := dstParts[layout.ESPPartition]
	if r.ESP.Number != 1 || r.ESP.StartLBA != esp.Start || r.ESP.SizeLBA != esp.End-esp.Start+1 || !strings.EqualFold(r.ESP.GUID.String(), esp.GUID) {
		t.Errorf("ESP for the boot entry = %+v, want partition 1 at %d-%d, %s", r.ESP, esp.Start, esp.End, esp.GUID)
	}
}

func layoutOf(t *testing.T, p string) map[string]*gpt.Partition {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := readLayout(f)
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// Bad input: each refusal names the problem and leaves the target as it
// was.
func TestInstallRefuses(t *testing.T) {
	src, _, _ := stick(t)
	withData := func(size, at int64) string {
		p := blank(t, size)
		f, _ := os.OpenFile(p, os.O_WRONLY, 0)
		defer f.Close()
		if _, err := f.WriteAt([]byte("an owner's data"), at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notRigOS := blank(t, 100*mib)
	for name, tc := range map[string]struct {
		src, dst string
		wipe     bool
		want     error
		text     string
	}{
		"too small":         {src: src, dst: blank(t, 100*mib), want: ErrTooSmall},
		"data at the start": {src: src, dst: withData(160*mib, 4096), want: ErrNotEmpty, text: "wipe"},
		"data at the end":   {src: src, dst: withData(160*mib, 160*mib-100), want: ErrNotEmpty},
		"source not RigOS":  {src: notRigOS, dst: blank(t, 160*mib), text: "partition table"},
		"target is source":  {src: src, dst: src, text: "boot disk itself"},
		"no such target":    {src: src, dst: filepath.Join(t.TempDir(), "nvme9n1"), text: "no such file"},
		"too small, wiped":  {src: src, dst: withData(100*mib, 0), wipe: true, want: ErrTooSmall},
	} {
		t.Run(name, func(t *testing.T) {
			before, _ := os.ReadFile(tc.dst)
			_, err := Install(Options{Source: tc.src, Target: tc.dst, Slot: layout.SlotA, Wipe: tc.wipe, MinState: testMinState})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !bytes.Contains([]byte(err.Error()), []byte(tc.text)) {
				t.Fatalf("Install = %v, want %v naming %q", err, tc.want, tc.text)
			}
			if after, _ := os.ReadFile(tc.dst); !bytes.Equal(before, after) {
				t.Errorf("the target changed")
			}
		})
	}
	// With wipe, a disk with data is installed over.
	dst := withData(160*mib, 4096)
	if _, err := Install(Options{Source: src, Target: dst, Slot: layout.SlotA, Wipe: true, MinState: testMinState}); err != nil {
		t.Fatalf("wipe: %v", err)
	}
	if _, err := disk.ReadUKI(dst); err != nil {
		t.Errorf("after a wipe install: %v", err)
	}
}

// BenchmarkInstall copies and reads back the test stick (64 MiB ESP,
// 16 MiB slot) onto a file: the copy's own cost, without a disk's.
func BenchmarkInstall(b *testing.B) {
	src, _, _ := stick(b)
	dir := b.TempDir()
	b.SetBytes(disk.MinESP + 16*mib)
	for i := 0; b.Loop(); i++ {
		dst := filepath.Join(dir, fmt.Sprintf("t%d", i))
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(dst, 160*mib); err != nil {
			b.Fatal(err)
		}
		if _, err := Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState}); err != nil {
			b.Fatal(err)
		}
		os.Remove(dst)
	}
}

// The boot disk is found by its ESP's GUID, here after an install, when
// two disks hold RigOS; a clone holding the same GUID is ambiguous.
func TestDiskWithPartition(t *testing.T) {
	src, _, _ := stick(t)
	dev := filepath.Dir(src)
	dst := filepath.Join(dev, "nvme0n1")
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dst, 160*mib); err != nil {
		t.Fatal(err)
	}
	r, err := Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState})
	if err != nil {
		t.Fatal(err)
	}
	parts := []string{layout.ESPPartition}
	disks := []blockdev.Disk{{Name: "stick.raw", Partitions: parts}, {Name: "nvme0n1", Partitions: parts}, {Name: "sda"}}
	d, err := blockdev.DiskWithPartition(dev, disks, r.ESP.GUID)
	if err != nil || d.Name != "nvme0n1" {
		t.Fatalf("DiskWithPartition(the installed ESP) = %v, %v", d.Name, err)
	}
	stickESP, err := uuid.Parse(layoutOf(t, src)[layout.ESPPartition].GUID)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := blockdev.DiskWithPartition(dev, disks, stickESP); err != nil || d.Name != "stick.raw" {
		t.Errorf("DiskWithPartition(the stick's ESP) = %v, %v", d.Name, err)
	}
	if _, err := blockdev.DiskWithPartition(dev, disks, uuid.New()); err == nil {
		t.Error("an unknown GUID was found")
	}
	clone := filepath.Join(dev, "sdb")
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clone, b, 0o644); err != nil {
		t.Fatal(err)
	}
	disks = append(disks, blockdev.Disk{Name: "sdb", Partitions: parts})
	if _, err := blockdev.DiskWithPartition(dev, disks, r.ESP.GUID); !errors.Is(err, blockdev.ErrAmbiguous) {
		t.Errorf("with a clone: %v, want ErrAmbiguous", err)
	}
}

// Power lost halfway through the copy (simulated by stopping after the
// second chunk): the GPT is written last, so the target holds no RigOS
// partitions at all, nothing the firmware or init would take for a
// RigOS disk; and its first and last MiB are still blank, so the
// platform's second try installs without a wipe.
func TestInstallCutShort(t *testing.T) {
	src, _, _ := stick(t)
	dst := blank(t, 160*mib)
	cut := errors.New("power lost")
	func() {
		defer func() {
			if r := recover(); r != cut {
				t.Fatalf("install was not cut short: %v", r)
			}
		}()
		Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState,
			Progress: func(done, total int64) {
				if done >= 2*chunk {
					panic(cut)
				}
			}})
	}()
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readLayout(f); err == nil {
		t.Fatal("a copy cut short left a RigOS partition table")
	}
	if _, err := disk.ReadUKI(dst); err == nil {
		t.Error("a copy cut short has a readable UKI")
	}
	if _, err := Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState}); err != nil {
		t.Fatalf("install again: %v", err)
	}
	if _, err := disk.ReadUKI(dst); err != nil {
		t.Errorf("after the second try: %v", err)
	}

	// Cut short again, now over that install with wipe: the old table
	// is gone too, so nothing points into the half-overwritten copy.
	func() {
		defer func() {
			if r := recover(); r != cut {
				t.Fatalf("install was not cut short: %v", r)
			}
		}()
		Install(Options{Source: src, Target: dst, Slot: layout.SlotA, MinState: testMinState, Wipe: true,
			Progress: func(done, total int64) {
				if done >= 2*chunk {
					panic(cut)
				}
			}})
	}()
	if _, err := readLayout(f); err == nil {
		t.Error("a wipe cut short left the earlier install's partition table")
	}
}
