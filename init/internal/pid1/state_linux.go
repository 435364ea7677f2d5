package pid1

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/devmapper"
	"github.com/rigos/rigos/pkg/statedisk"
	"github.com/rigos/rigos/pkg/tpm"
)

// StateMount is where the decrypted STATE partition is mounted:
// containerd's content store and snapshots, and the agent's state.
const StateMount = "/var/lib/rigos"

// unlockState opens the encrypted RIGOS-STATE partition with the key
// sealed in the TPM, or creates it on first boot, and mounts it on
// StateMount. It must run while PCR 15 is at the "modules-locked" phase:
// that value is part of the seal. A damaged header or a key that does
// not unseal leaves the partition untouched.
func unlockState(rw io.ReadWriter) error {
	part, err := findPartition("RIGOS-STATE", 20*time.Second)
	if err != nil {
		return err
	}
	devPath, err := blockDevice(part)
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
	if size <= statedisk.DataOffset+16<<20 {
		return fmt.Errorf("state partition of %d bytes is too small", size)
	}
	head := make([]byte, statedisk.Slots*statedisk.SlotSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("reading the state header: %w", err)
	}
	key := make([]byte, statedisk.KeySize)
	defer clear(key)
	h, err := statedisk.Decode(head)
	fresh := errors.Is(err, statedisk.ErrBlank)
	switch {
	case fresh:
		if _, err := rand.Read(key); err != nil {
			return err
		}
		sealed, err := tpm.Seal(rw, key, statedisk.SealPCRs)
		if err != nil {
			return err
		}
		h = statedisk.New(sealed)
	case err != nil:
		return fmt.Errorf("%w; leaving the partition untouched", err)
	default:
		k, err := tpm.Unseal(rw, &h.Key)
		if err != nil {
			return fmt.Errorf("state key: %w", err)
		}
		copy(key, k)
		clear(k)
	}

	dataSize := size - statedisk.DataOffset
	mapped, err := devmapper.Create("rigos-state", []devmapper.Target{{
		Start: 0, Length: uint64(dataSize / 512), Type: "crypt",
		Params: devmapper.CryptParams(statedisk.Cipher, key, part, statedisk.DataOffset/512),
	}})
	if err != nil {
		return err
	}
	if fresh {
		start := time.Now()
		if err := formatState(mapped, dataSize); err != nil {
			return err
		}
		// The header goes last: a first boot cut short before this point
		// leaves a blank partition, formatted again next time.
		b, err := h.Encode()
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(b, 0); err != nil {
			return fmt.Errorf("writing the state header: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("syncing the state header: %w", err)
		}
		say("state partition %s created: ext4 in dm-crypt %s, key sealed to PCRs %v (%s)",
			devPath, statedisk.Cipher, statedisk.SealPCRs, time.Since(start).Round(time.Millisecond))
	}
	if err := os.MkdirAll(StateMount, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(mapped, StateMount, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "errors=remount-ro"); err != nil {
		return fmt.Errorf("mounting the state partition: %w", err)
	}
	if !fresh {
		say("state partition %s unlocked with the TPM-sealed key and mounted on %s", devPath, StateMount)
	}
	return nil
}

func formatState(dev string, size int64) error {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := ext4.Create(file.New(f, false), size, 0, 512, &ext4.Params{
		SectorsPerBlock: 8, VolumeName: "rigos-state",
	}); err != nil {
		return fmt.Errorf("creating ext4 on the state partition: %w", err)
	}
	return f.Sync()
}

// blockDevice returns the /dev path of the block device "MAJOR:MINOR".
func blockDevice(num string) (string, error) {
	b, err := os.ReadFile("/sys/dev/block/" + num + "/uevent")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("block device %s has no name", num)
}
