package efiboot

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

var espGUID = uuid.MustParse("8be4df61-93ca-11d2-aa0d-00e098032b8c")

func testOption() LoadOption {
	return LoadOption{Attributes: LoadOptionActive, Description: "RigOS",
		Partition: Partition{Number: 1, StartLBA: 2048, SizeLBA: 262144, GUID: espGUID},
		Path:      `\EFI\RIGOS\rigos-a.efi`}
}

// The encoding, field by field, as UEFI 2.10 §3.1.3 and §10.3.5.1 lay
// it out; the GUID in EFI's mixed-endian order.
func TestMarshalLayout(t *testing.T) {
	b := testOption().Marshal()
	if got := binary.LittleEndian.Uint32(b); got != LoadOptionActive {
		t.Errorf("attributes %#x", got)
	}
	desc := "5200690067004f0053000000" // "RigOS" NUL, UCS-2
	if got := hex.EncodeToString(b[6 : 6+12]); got != desc {
		t.Errorf("description %s, want %s", got, desc)
	}
	dp := b[18:]
	if got, want := int(binary.LittleEndian.Uint16(b[4:])), len(dp); got != want {
		t.Errorf("FilePathListLength %d, device path is %d bytes", got, want)
	}
	hd := "0401" + "2a00" + "01000000" + "0008000000000000" + "0000040000000000" +
		"61dfe48bca93d211aa0d00e098032b8c" + "02" + "02"
	if got := hex.EncodeToString(dp[:42]); got != hd {
		t.Errorf("hard-drive node\n got %s\nwant %s", got, hd)
	}
	path := testOption().Path
	fp := dp[42:]
	if fp[0] != 4 || fp[1] != 4 || int(binary.LittleEndian.Uint16(fp[2:])) != 4+2*(len(path)+1) {
		t.Errorf("file path node header % x", fp[:4])
	}
	if end := fp[len(fp)-4:]; !bytes.Equal(end, []byte{0x7f, 0xff, 4, 0}) {
		t.Errorf("end node % x", end)
	}
}

func TestParseRoundTrip(t *testing.T) {
	o := testOption()
	got, err := ParseLoadOption(o.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(o, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// Bad input: every malformed option is an error, none a panic; an
// option of another kind is ErrNotOurs.
func TestParseLoadOptionRefuses(t *testing.T) {
	good := testOption().Marshal()
	cut := func(n int) []byte { return slices.Clone(good[:n]) }
	set := func(off int, v ...byte) []byte { b := slices.Clone(good); copy(b[off:], v); return b }
	for name, b := range map[string][]byte{
		"empty":                   nil,
		"no description NUL":      cut(12),
		"path list past the end":  cut(len(good) - 3),
		"node length 0":           set(18+2, 0, 0),
		"node longer than path":   set(18+2, 0xff, 0),
		"file path not NUL-ended": set(len(good)-6, 'x', 0),
	} {
		if _, err := ParseLoadOption(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// A network boot entry: MAC address node, then the end.
	var pxe []byte
	pxe = binary.LittleEndian.AppendUint32(pxe, LoadOptionActive)
	dp := []byte{0x03, 0x0b, 37, 0}
	dp = append(dp, make([]byte, 33)...)
	dp = append(dp, 0x7f, 0xff, 4, 0)
	pxe = binary.LittleEndian.AppendUint16(pxe, uint16(len(dp)))
	pxe = append(pxe, ucs2("UEFI PXEv4")...)
	pxe = append(pxe, dp...)
	if _, err := ParseLoadOption(pxe); !errors.Is(err, ErrNotOurs) {
		t.Errorf("network boot entry: %v, want ErrNotOurs", err)
	}
}

func FuzzParseLoadOption(f *testing.F) {
	f.Add(testOption().Marshal())
	f.Add([]byte{1, 0, 0, 0, 4, 0, 0, 0, 0x7f, 0xff, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseLoadOption(b)
		if err != nil {
			return
		}
		again, err := ParseLoadOption(o.Marshal())
		if err != nil {
			t.Fatalf("re-encoded option does not parse: %v", err)
		}
		if diff := cmp.Diff(o, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// writeVar writes an efivarfs-style file: attributes, then data.
func writeVar(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	b := binary.LittleEndian.AppendUint32(nil, varAttributes)
	if err := os.WriteFile(filepath.Join(dir, name+"-"+GlobalGUID), append(b, data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// AddFirst takes the lowest free number, goes first in BootOrder and
// keeps the other entries; a second install of the same partition and
// path rewrites its entry rather than adding one.
func TestAddFirst(t *testing.T) {
	dir := t.TempDir()
	var unlocked []string
	v := Vars{Dir: dir, Unlock: func(p string) error { unlocked = append(unlocked, filepath.Base(p)); return nil }}
	other := testOption()
	other.Description, other.Partition.GUID = "USB stick", uuid.MustParse("11111111-2222-4333-8444-555555555555")
	writeVar(t, dir, "Boot0000", other.Marshal())
	writeVar(t, dir, "Boot0001", []byte{1, 0, 0, 0}) // not parseable: kept, never reused
	writeVar(t, dir, "BootOrder", encodeOrder([]uint16{1, 0}))

	n, err := v.AddFirst(testOption())
	if err != nil || n != 2 {
		t.Fatalf("AddFirst = %d, %v; want 2", n, err)
	}
	order, err := v.BootOrder()
	if err != nil || !slices.Equal(order, []uint16{2, 1, 0}) {
		t.Errorf("BootOrder = %v, %v; want [2 1 0]", order, err)
	}
	if e, err := v.Entry(2); err != nil || e != testOption() {
		t.Errorf("Boot0002 = %+v, %v", e, err)
	}
	if !slices.Equal(unlocked, []string{"BootOrder-" + GlobalGUID}) {
		t.Errorf("unlocked %v, want BootOrder only (Boot0002 is new)", unlocked)
	}

	// Again, with the entry not first any more.
	writeVar(t, dir, "BootOrder", encodeOrder([]uint16{0, 2}))
	if n, err := v.AddFirst(testOption()); err != nil || n != 2 {
		t.Fatalf("second AddFirst = %d, %v; want 2 again", n, err)
	}
	if order, _ := v.BootOrder(); !slices.Equal(order, []uint16{2, 0}) {
		t.Errorf("BootOrder = %v, want [2 0]", order)
	}
	if err := v.SetBootNext(0); err != nil {
		t.Fatal(err)
	}
	if b, err := v.read("BootNext"); err != nil || !bytes.Equal(b, []byte{0, 0}) {
		t.Errorf("BootNext = % x, %v", b, err)
	}
}

func TestBootOrderOddLength(t *testing.T) {
	dir := t.TempDir()
	writeVar(t, dir, "BootOrder", []byte{1, 0, 2})
	if _, err := (Vars{Dir: dir}).BootOrder(); err == nil {
		t.Error("BootOrder of 3 bytes parsed")
	}
}

func TestLoaderDevicePartUUID(t *testing.T) {
	dir := t.TempDir()
	b := binary.LittleEndian.AppendUint32(nil, 6)
	b = append(b, ucs2("469F90E4-7473-4E45-B5FF-C2870845283B")...)
	if err := os.WriteFile(filepath.Join(dir, "LoaderDevicePartUUID-"+LoaderGUID), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := LoaderDevicePartUUID(dir)
	if err != nil || id.String() != "469f90e4-7473-4e45-b5ff-c2870845283b" {
		t.Errorf("LoaderDevicePartUUID = %v, %v", id, err)
	}
	for name, data := range map[string][]byte{"short": {6, 0}, "not a GUID": append(binary.LittleEndian.AppendUint32(nil, 6), ucs2("disk")...),
		"non-volatile (left by someone else)": append(binary.LittleEndian.AppendUint32(nil, 7), ucs2("469F90E4-7473-4E45-B5FF-C2870845283B")...)} {
		if err := os.WriteFile(filepath.Join(dir, "LoaderDevicePartUUID-"+LoaderGUID), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoaderDevicePartUUID(dir); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if _, err := LoaderDevicePartUUID(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no variable: %v, want ErrNotExist", err)
	}
}

// Add writes an entry (an update's slot, booted once through BootNext)
// and leaves the boot order alone.
func TestAddKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	v := Vars{Dir: dir, Unlock: func(string) error { return nil }}
	other := testOption()
	other.Path = `\EFI\RIGOS\rigos-a.efi`
	writeVar(t, dir, "Boot0000", other.Marshal())
	writeVar(t, dir, "BootOrder", encodeOrder([]uint16{0}))
	b := testOption()
	b.Path = `\EFI\RIGOS\rigos-b.efi`
	for range 2 { // the second time it is found, not added again
		n, err := v.Add(b)
		if err != nil || n != 1 {
			t.Fatalf("Add = %d, %v; want 1", n, err)
		}
	}
	if order, err := v.BootOrder(); err != nil || !slices.Equal(order, []uint16{0}) {
		t.Errorf("BootOrder = %v, %v; want [0] unchanged", order, err)
	}
	if nums, _ := v.Entries(); !slices.Equal(nums, []uint16{0, 1}) {
		t.Errorf("entries %v, want [0 1]", nums)
	}
}
