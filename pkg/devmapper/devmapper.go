// Package devmapper sets up device-mapper targets with the kernel's DM
// ioctl interface (/dev/mapper/control), without dmsetup: init creates
// the dm-verity device for the read-only system partition and the
// dm-crypt device for the encrypted state partition with it.
package devmapper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	cmdDevCreate  = 3
	cmdDevSuspend = 6
	cmdTableLoad  = 9

	flagReadOnly = 1 << 0
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
