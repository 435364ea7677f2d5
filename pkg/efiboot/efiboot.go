// Package efiboot reads and writes UEFI boot entries through efivarfs:
// Boot#### load options (EFI_LOAD_OPTION, UEFI 2.10 §3.1.3) naming an
// EFI application on a GPT partition, BootOrder and BootNext.
//
// A load option RigOS writes has one device path: the partition as a
// hard-drive media node (partition number, start and size in LBAs, the
// partition's unique GUID), then the application's path on its FAT file
// system. Firmware matches the partition by its GUID on any disk, as it
// does for the entries operating system installers write.
package efiboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/google/uuid"
	"github.com/rigos/rigos/pkg/guid"
)

// GlobalGUID is EFI_GLOBAL_VARIABLE, the vendor GUID of the boot
// variables.
const GlobalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Attributes of a load option.
const (
	LoadOptionActive = 0x1
)

// Variable attributes: non-volatile, boot-service and runtime access.
const (
	nonVolatile   = 0x1
	varAttributes = 0x7
)

// Device path node types (UEFI 2.10 §10.3).
const (
	typeMedia     = 0x04
	subHardDrive  = 0x01
	subFilePath   = 0x04
	typeEnd       = 0x7f
	subEndEntire  = 0xff
	hardDriveLen  = 42
	mbrTypeGPT    = 0x02
	signatureGUID = 0x02
)

// Partition is a GPT partition as a hard-drive media device path names
// it.
type Partition struct {
	Number   uint32 // 1-based entry number in the GPT
	StartLBA uint64
	SizeLBA  uint64
	GUID     uuid.UUID // the partition's unique GUID
}

// LoadOption is a Boot#### variable: an application at Path (with
// backslashes, "\EFI\RIGOS\rigos-a.efi") on Partition.
type LoadOption struct {
	Attributes  uint32
	Description string
	Partition   Partition
	Path        string
}

// Marshal encodes o as an EFI_LOAD_OPTION with no optional data.
func (o LoadOption) Marshal() []byte {
	var dp bytes.Buffer
	dp.Write([]byte{typeMedia, subHardDrive})
	binary.Write(&dp, binary.LittleEndian, uint16(hardDriveLen))
	binary.Write(&dp, binary.LittleEndian, o.Partition.Number)
	binary.Write(&dp, binary.LittleEndian, o.Partition.StartLBA)
	binary.Write(&dp, binary.LittleEndian, o.Partition.SizeLBA)
	dp.Write(guid.ToEFI(o.Partition.GUID))
	dp.Write([]byte{mbrTypeGPT, signatureGUID})
	path := ucs2(o.Path)
	dp.Write([]byte{typeMedia, subFilePath})
	binary.Write(&dp, binary.LittleEndian, uint16(4+len(path)))
	dp.Write(path)
	dp.Write([]byte{typeEnd, subEndEntire, 4, 0})

	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, o.Attributes)
	binary.Write(&b, binary.LittleEndian, uint16(dp.Len()))
	b.Write(ucs2(o.Description))
	b.Write(dp.Bytes())
	return b.Bytes()
}

// ErrNotOurs is wrapped by ParseLoadOption for a well-formed load option
// whose device path is not a hard-drive node and a file path (a network
// boot, a firmware application, a short-form USB path).
var ErrNotOurs = errors.New("not a partition and file path")

// ParseLoadOption decodes an EFI_LOAD_OPTION whose device path is a
// hard-drive node followed by a file path, as Marshal writes; other
// well-formed options give ErrNotOurs. b is untrusted: every length is
// checked.
func ParseLoadOption(b []byte) (LoadOption, error) {
	var o LoadOption
	if len(b) < 6 {
		return o, fmt.Errorf("load option of %d bytes: too short", len(b))
	}
	o.Attributes = binary.LittleEndian.Uint32(b)
	dpLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	desc, n, err := readUCS2(rest)
	if err != nil {
		return o, fmt.Errorf("description: %w", err)
	}
	o.Description = desc
	rest = rest[n:]
	if dpLen > len(rest) {
		return o, fmt.Errorf("device path of %d bytes, %d left", dpLen, len(rest))
	}
	dp := rest[:dpLen]
	var nodes [][]byte
	for len(dp) > 0 {
		if len(dp) < 4 {
			return o, errors.New("device path node header cut short")
		}
		l := int(binary.LittleEndian.Uint16(dp[2:]))
		if l < 4 || l > len(dp) {
			return o, fmt.Errorf("device path node of length %d, %d bytes left", l, len(dp))
		}
		node := dp[:l]
		dp = dp[l:]
		if node[0] == typeEnd && node[1] == subEndEntire {
			if len(dp) > 0 {
				// A second instance (multi-instance paths): not ours.
				return o, fmt.Errorf("device path: %w", ErrNotOurs)
			}
			break
		}
		nodes = append(nodes, node)
	}
	if len(nodes) != 2 || nodes[0][0] != typeMedia || nodes[0][1] != subHardDrive || len(nodes[0]) != hardDriveLen ||
		nodes[1][0] != typeMedia || nodes[1][1] != subFilePath {
		return o, fmt.Errorf("device path of %d nodes: %w", len(nodes), ErrNotOurs)
	}
	hd := nodes[0][4:]
	if hd[36] != mbrTypeGPT || hd[37] != signatureGUID {
		return o, fmt.Errorf("hard-drive node with MBR type %d, signature type %d: %w", hd[36], hd[37], ErrNotOurs)
	}
	o.Partition.Number = binary.LittleEndian.Uint32(hd)
	o.Partition.StartLBA = binary.LittleEndian.Uint64(hd[4:])
	o.Partition.SizeLBA = binary.LittleEndian.Uint64(hd[12:])
	o.Partition.GUID = guid.FromEFI(hd[20:36])
	path, n, err := readUCS2(nodes[1][4:])
	if err != nil || n != len(nodes[1])-4 {
		return o, fmt.Errorf("file path node: %v", errors.Join(err, errors.New("trailing bytes")))
	}
	o.Path = path
	return o, nil
}

// ucs2 is s as a NUL-terminated UCS-2 little-endian string.
func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, 0, 0)
}

// readUCS2 reads a NUL-terminated UCS-2 string from b and returns it and
// the bytes it took, the NUL included.
func readUCS2(b []byte) (string, int, error) {
	var u []uint16
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			return string(utf16.Decode(u)), i + 2, nil
		}
		u = append(u, c)
	}
	return "", 0, errors.New("no terminating NUL")
}

// Vars are the boot variables in an efivarfs folder (on a booted system
// /sys/firmware/efi/efivars).
type Vars struct {
	Dir string
	// Unlock makes an existing variable file writable (efivarfs marks
	// them immutable); nil: ClearImmutable.
	Unlock func(path string) error
}

func (v Vars) path(name string) string { return filepath.Join(v.Dir, name+"-"+GlobalGUID) }

// read returns a variable's data, without its attributes; a missing
// variable is os.ErrNotExist.
func (v Vars) read(name string) ([]byte, error) {
	b, err := os.ReadFile(v.path(name))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("%s: %d bytes, no attributes", name, len(b))
	}
	return b[4:], nil
}

// write sets a variable in one write, as efivarfs needs: attributes,
// then data.
func (v Vars) write(name string, data []byte) error {
	p := v.path(name)
	if _, err := os.Stat(p); err == nil {
		unlock := v.Unlock
		if unlock == nil {
			unlock = ClearImmutable
		}
		if err := unlock(p); err != nil {
			return fmt.Errorf("making %s writable: %w", name, err)
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	b := binary.LittleEndian.AppendUint32(nil, varAttributes)
	if _, err := f.Write(append(b, data...)); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return f.Close()
}

// BootOrder returns the boot order; none set is an empty order.
func (v Vars) BootOrder() ([]uint16, error) {
	b, err := v.read("BootOrder")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b)%2 != 0 {
		return nil, fmt.Errorf("BootOrder of %d bytes: not a list of 16-bit numbers", len(b))
	}
	order := make([]uint16, len(b)/2)
	for i := range order {
		order[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return order, nil
}

func encodeOrder(order []uint16) []byte {
	var b []byte
	for _, n := range order {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return b
}

// SetBootOrder writes the boot order.
func (v Vars) SetBootOrder(order []uint16) error { return v.write("BootOrder", encodeOrder(order)) }

// BootCurrent returns the boot entry the firmware booted this time.
func (v Vars) BootCurrent() (uint16, error) {
	b, err := v.read("BootCurrent")
	if err != nil {
		return 0, err
	}
	if len(b) != 2 {
		return 0, fmt.Errorf("BootCurrent of %d bytes", len(b))
	}
	return uint16(b[0]) | uint16(b[1])<<8, nil
}

// SetBootNext makes the next boot, once, boot entry n.
func (v Vars) SetBootNext(n uint16) error { return v.write("BootNext", encodeOrder([]uint16{n})) }

// Entries returns the Boot#### numbers that exist.
func (v Vars) Entries() ([]uint16, error) {
	files, err := filepath.Glob(filepath.Join(v.Dir, "Boot[0-9A-F][0-9A-F][0-9A-F][0-9A-F]-"+GlobalGUID))
	if err != nil {
		return nil, err
	}
	var out []uint16
	for _, f := range files {
		n, err := strconv.ParseUint(strings.TrimPrefix(filepath.Base(f), "Boot")[:4], 16, 16)
		if err == nil {
			out = append(out, uint16(n))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Entry reads Boot####.
func (v Vars) Entry(n uint16) (LoadOption, error) {
	b, err := v.read(fmt.Sprintf("Boot%04X", n))
	if err != nil {
		return LoadOption{}, err
	}
	return ParseLoadOption(b)
}

// AddFirst writes o as a boot entry (Add) and puts it first in the boot
// order, keeping the others after it. It returns the entry's number.
func (v Vars) AddFirst(o LoadOption) (uint16, error) {
	num, err := v.Add(o)
	if err != nil {
		return 0, err
	}
	order, err := v.BootOrder()
	if err != nil {
		return 0, err
	}
	order = slices.DeleteFunc(order, func(n uint16) bool { return n == num })
	return num, v.SetBootOrder(append([]uint16{num}, order...))
}

// Add writes o as a boot entry, leaving the boot order as it is. An
// entry already naming the same partition GUID and path is rewritten in
// place; otherwise o gets the lowest free number. It returns the entry's
// number.
func (v Vars) Add(o LoadOption) (uint16, error) {
	nums, err := v.Entries()
	if err != nil {
		return 0, err
	}
	num, found := uint16(0), false
	for _, n := range nums {
		if e, err := v.Entry(n); err == nil && e.Partition.GUID == o.Partition.GUID && strings.EqualFold(e.Path, o.Path) {
			num, found = n, true
			break
		}
	}
	for !found {
		if !slices.Contains(nums, num) {
			break
		}
		if num == 0xffff {
			return 0, errors.New("no free boot entry number")
		}
		num++
	}
	if err := v.write(fmt.Sprintf("Boot%04X", num), o.Marshal()); err != nil {
		return 0, err
	}
	return num, nil
}

// LoaderGUID is the vendor GUID of the variables systemd's boot stub
// sets for the booted system.
const LoaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// LoaderDevicePartUUID reads the unique GUID of the partition the UKI
// was loaded from, which systemd-stub sets at boot, from the efivarfs
// folder dir. The stub sets it only when it is not set already, and
// volatile: a non-volatile one was left by someone else (an owner
// steering the node to another disk) and is refused.
func LoaderDevicePartUUID(dir string) (uuid.UUID, error) {
	b, err := os.ReadFile(filepath.Join(dir, "LoaderDevicePartUUID-"+LoaderGUID))
	if err != nil {
		return uuid.UUID{}, err
	}
	if len(b) < 4 {
		return uuid.UUID{}, fmt.Errorf("LoaderDevicePartUUID: %d bytes", len(b))
	}
	if binary.LittleEndian.Uint32(b)&nonVolatile != 0 {
		return uuid.UUID{}, errors.New("LoaderDevicePartUUID is non-volatile: not the one systemd-stub sets at boot")
	}
	s, _, err := readUCS2(append(b[4:], 0, 0))
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("LoaderDevicePartUUID: %w", err)
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("LoaderDevicePartUUID %q: %w", s, err)
	}
	return id, nil
}
