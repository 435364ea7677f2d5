// Package devmapper sets up device-mapper targets with the kernel's DM
// ioctl interface (/dev/mapper/control), without dmsetup: init creates
// the dm-verity device for the read-only system partition and the
// dm-crypt device for the encrypted state partition with it.
package devmapper

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sizes from linux/dm-ioctl.h.
const (
	ioctlSize  = 312 // struct dm_ioctl
	targetSize = 40  // struct dm_target_spec
	nameLen    = 128
	uuidLen    = 129
)

// DM commands and flags.
const (
	cmdDevCreate   = 3
	cmdDevSuspend  = 6
	cmdTableLoad   = 9
	cmdTableStatus = 12

	flagReadOnly    = 1 << 0
	flagStatusTable = 1 << 4 // DM_STATUS_TABLE_FLAG: the table, not the status
	flagBufferFull  = 1 << 8
)

// Target is one line of a device-mapper table.
type Target struct {
	Start, Length uint64 // in 512-byte sectors
	Type          string // "verity", "crypt", ...
	Params        string
}

// encode builds the ioctl buffer: struct dm_ioctl, then the targets.
func encode(name string, flags uint32, targets []Target) ([]byte, error) {
	if len(name) == 0 || len(name) >= nameLen {
		return nil, fmt.Errorf("device-mapper name %q: want 1-%d bytes", name, nameLen-1)
	}
	var body bytes.Buffer
	for i, t := range targets {
		if len(t.Type) == 0 || len(t.Type) >= 16 {
			return nil, fmt.Errorf("target type %q", t.Type)
		}
		params := append([]byte(t.Params), 0)
		for (targetSize+len(params))%8 != 0 {
			params = append(params, 0)
		}
		next := uint32(0)
		if i < len(targets)-1 {
			next = uint32(targetSize + len(params))
		}
		var spec [targetSize]byte
		binary.LittleEndian.PutUint64(spec[0:], t.Start)
		binary.LittleEndian.PutUint64(spec[8:], t.Length)
		binary.LittleEndian.PutUint32(spec[20:], next)
		copy(spec[24:], t.Type)
		body.Write(spec[:])
		body.Write(params)
	}
	buf := make([]byte, ioctlSize, ioctlSize+body.Len()+256)
	binary.LittleEndian.PutUint32(buf[0:], 4) // interface version 4.0.0
	binary.LittleEndian.PutUint32(buf[12:], uint32(ioctlSize+body.Len()+256))
	binary.LittleEndian.PutUint32(buf[16:], ioctlSize)
	binary.LittleEndian.PutUint32(buf[20:], uint32(len(targets)))
	binary.LittleEndian.PutUint32(buf[28:], flags)
	copy(buf[48:48+nameLen], name)
	buf = append(buf, body.Bytes()...)
	return append(buf, make([]byte, 256)...), nil // room for the kernel's answer
}

// statusBuffer is encode's buffer for a table query with room for size
// bytes of answer.
func statusBuffer(name string, size int) ([]byte, error) {
	buf, err := encode(name, flagStatusTable, nil)
	if err != nil {
		return nil, err
	}
	buf = append(buf[:ioctlSize], make([]byte, size)...)
	binary.LittleEndian.PutUint32(buf[12:], uint32(len(buf)))
	return buf, nil
}

// decodeTable reads the targets of a DM_TABLE_STATUS answer.
func decodeTable(buf []byte) ([]Target, error) {
	if len(buf) < ioctlSize {
		return nil, errors.New("short device-mapper answer")
	}
	if binary.LittleEndian.Uint32(buf[28:])&flagBufferFull != 0 {
		return nil, errors.New("device-mapper table larger than the buffer")
	}
	size, start := binary.LittleEndian.Uint32(buf[12:]), binary.LittleEndian.Uint32(buf[16:])
	count := binary.LittleEndian.Uint32(buf[20:])
	if int(size) > len(buf) || start < ioctlSize || start > size {
		return nil, fmt.Errorf("device-mapper answer of %d bytes with data at %d", size, start)
	}
	data := buf[start:size]
	var out []Target
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+targetSize > len(data) {
			return nil, fmt.Errorf("device-mapper target %d outside the answer", i)
		}
		spec := data[off : off+targetSize]
		rest := data[off+targetSize:]
		end := bytes.IndexByte(rest, 0)
		if end < 0 {
			return nil, fmt.Errorf("device-mapper target %d: unterminated parameters", i)
		}
		out = append(out, Target{
			Start: binary.LittleEndian.Uint64(spec[0:]), Length: binary.LittleEndian.Uint64(spec[8:]),
			Type: string(bytes.TrimRight(spec[24:40], "\x00")), Params: string(rest[:end]),
		})
		next := int(binary.LittleEndian.Uint32(spec[20:]))
		if i+1 < count && next <= off {
			return nil, fmt.Errorf("device-mapper target %d: next at %d", i, next)
		}
		off = next
	}
	return out, nil
}

// CryptKey returns the volume key of the dm-crypt target in targets
// (the key in hex in its parameters: "cipher key iv_offset dev offset").
func CryptKey(targets []Target) ([]byte, error) {
	if len(targets) != 1 || targets[0].Type != "crypt" {
		return nil, fmt.Errorf("want one crypt target, got %d targets", len(targets))
	}
	f := strings.Fields(targets[0].Params)
	if len(f) < 2 || strings.HasPrefix(f[1], ":") {
		return nil, errors.New("the crypt target's key is not in its table (kernel keyring?)")
	}
	key, err := hex.DecodeString(f[1])
	if err != nil || len(key) == 0 {
		return nil, errors.New("the crypt target's key is not hex")
	}
	return key, nil
}

// decodeDev reads the device number the kernel returned.
func decodeDev(buf []byte) (uint64, error) {
	if len(buf) < ioctlSize {
		return 0, errors.New("short device-mapper answer")
	}
	return binary.LittleEndian.Uint64(buf[40:]), nil
}

// VerityParams is the dm-verity table for data and hash tree on one
// device (hash tree right after the data blocks), 4 KiB blocks, SHA-256.
func VerityParams(dev string, dataBlocks uint64, root, salt []byte) string {
	return fmt.Sprintf("1 %s %s 4096 4096 %d %d sha256 %x %x", dev, dev, dataBlocks, dataBlocks, root, salt)
}

// CryptParams is the dm-crypt table for key on dev, data starting
// offsetSectors into it (the sectors before hold the state header), IVs
// counted from the start of the mapped device.
func CryptParams(cipher string, key []byte, dev string, offsetSectors uint64) string {
	return fmt.Sprintf("%s %x 0 %s %d", cipher, key, dev, offsetSectors)
}
