package pid1

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/devmapper"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/luks2"
	"github.com/rigos/rigos/pkg/statedisk"
	"github.com/rigos/rigos/pkg/tpm"
)

// unlockState opens the encrypted RIGOS-STATE partition with the key
// sealed in the TPM, or creates it on first boot, and mounts it on
// layout.StateMount. It must run while PCR 15 is at the "modules-locked" phase:
// that value is part of the seal, and of the creation data the unseal
// checks. A damaged header, a key that does not unseal (tpm.ErrPolicy:
// another build or boot chain) or a sealed key this boot chain did not
// create (tpm.ErrForged: a volume the owner wrote, or one from before
// creation checks) leaves the partition untouched, and the node runs
// without workloads.
func unlockState(sys sysfs, rw io.ReadWriter) error {
	part, err := sys.findPartition(layout.StatePartition, 20*time.Second)
	if err != nil {
		return err
	}
	devPath, err := sys.blockDevice(part)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(devPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", devPath, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if size <= statedisk.MetadataSize+16<<20 {
		return fmt.Errorf("state partition of %d bytes is too small", size)
	}
	meta := make([]byte, statedisk.MetadataSize)
	if _, err := f.ReadAt(meta, 0); err != nil {
		return fmt.Errorf("reading the state header: %w", err)
	}
	var key []byte
	defer func() { clear(key) }()
	vol, err := statedisk.Read(meta)
	fresh := errors.Is(err, statedisk.ErrBlank)
	dataOffset := int64(statedisk.MetadataSize)
	switch {
	case fresh:
		key, meta, err = newStateVolume(rw)
		if err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("%w; leaving the partition untouched", err)
	default:
		pass, err := tpm.Unseal(rw, vol.Sealed, statedisk.SealPCRs)
		if err != nil {
			return fmt.Errorf("state key: %w", err)
		}
		key, err = vol.Unlock(meta, pass)
		clear(pass)
		if err != nil {
			return fmt.Errorf("state key: %w", err)
		}
		dataOffset = vol.DataOffset
	}

	dataSize := size - dataOffset
	mapped, err := devmapper.Create(layout.StateMapping, []devmapper.Target{{
		Start: 0, Length: uint64(dataSize / 512), Type: "crypt",
		Params: devmapper.CryptParams(luks2.Cipher, key, part, uint64(dataOffset/512)),
	}})
	if err != nil {
		return err
	}
	if fresh {
		start := time.Now()
		if err := formatState(mapped, dataSize); err != nil {
			return err
		}
		// The LUKS2 metadata goes last: a first boot cut short before
		// this point leaves a blank partition, formatted again next time.
		if _, err := f.WriteAt(meta, 0); err != nil {
			return fmt.Errorf("writing the state header: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("syncing the state header: %w", err)
		}
		say("state partition %s created: ext4 in LUKS2 (%s), passphrase sealed to PCRs %v (%s)",
			devPath, luks2.Cipher, statedisk.SealPCRs, time.Since(start).Round(time.Millisecond))
	}
	if err := os.MkdirAll(layout.StateMount, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(mapped, layout.StateMount, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "errors=remount-ro"); err != nil {
		return fmt.Errorf("mounting the state partition: %w", err)
	}
	if !fresh {
		say("state partition %s unlocked with the TPM-sealed key and mounted on %s", devPath, layout.StateMount)
	}
	return nil
}

// newStateVolume draws a volume key and a passphrase, seals the
// passphrase in the TPM and returns the key and the LUKS2 metadata.
func newStateVolume(rw io.ReadWriter) ([]byte, []byte, error) {
	key, pass := make([]byte, luks2.KeySize), make([]byte, 64)
	defer clear(pass)
	uuid := make([]byte, 16)
	for _, b := range [][]byte{key, pass, uuid} {
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
	}
	sealed, err := tpm.Seal(rw, pass, statedisk.SealPCRs)
	if err != nil {
		return nil, nil, err
	}
	uuid[6], uuid[8] = uuid[6]&0x0f|0x40, uuid[8]&0x3f|0x80 // version 4
	id := fmt.Sprintf("%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16])
	meta, err := statedisk.New(key, pass, sealed, id)
	if err != nil {
		return nil, nil, err
	}
	return key, meta, nil
}

func formatState(dev string, size int64) error {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := ext4.Create(file.New(f, false), size, 0, 512, &ext4.Params{
		SectorsPerBlock: 8, VolumeName: layout.StateLabel,
	}); err != nil {
		return fmt.Errorf("creating ext4 on the state partition: %w", err)
	}
	return f.Sync()
}
