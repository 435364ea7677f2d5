package pid1

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/devmapper"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/luks2"
	"github.com/rigos/rigos/pkg/measure"
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
func unlockState(sys sysfs, rw io.ReadWriter, record func(kind string, data []byte) error, prune bool) error {
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
		var how string
		if key, how, err = unlockVolume(rw, f, vol, meta, record, prune); err != nil {
			return err
		}
		dataOffset = vol.DataOffset
		say("state key: %s", how)
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

// newStateVolume draws a volume key, seals the passphrase derived from
// it in the TPM, bound to the state counter as it is, and returns the
// key and the LUKS2 metadata.
func newStateVolume(rw io.ReadWriter) ([]byte, []byte, error) {
	key := make([]byte, luks2.KeySize)
	uuid := make([]byte, 16)
	for _, b := range [][]byte{key, uuid} {
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
	}
	pass := statedisk.Passphrase(key)
	defer clear(pass)
	c, err := tpm.Counter(rw)
	if err != nil {
		return nil, nil, err
	}
	sealed, err := tpm.Seal(rw, pass, statedisk.SealPCRs, &c)
	if err != nil {
		return nil, nil, err
	}
	pcrs, err := tpm.ReadPCRs(rw, statedisk.SealPCRs)
	if err != nil {
		return nil, nil, err
	}
	uuid[6], uuid[8] = uuid[6]&0x0f|0x40, uuid[8]&0x3f|0x80 // version 4
	id := fmt.Sprintf("%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16])
	meta, err := statedisk.New(key, pass, sealed, id, pcrs[11])
	if err != nil {
		return nil, nil, err
	}
	if err := writeStateSeal(pcrs, sealed); err != nil {
		return nil, nil, err
	}
	return key, meta, nil
}

// unlockVolume unseals the volume's passphrase: with a key a build sealed
// for itself, or else with one the build before it handed over on an
// update (tpm.UnsealFrom: sealed by a boot with the same Secure Boot
// state). After a handover it seals its own key, so the state no longer
// depends on the handover, and writes the header (f) with it. It says
// how the state was unlocked. A handover is measured (record: which
// build sealed the key), for the verifier to accept only from an active
// build; its passphrase must be the one derived from the key. With
// prune (a boot that is not an update's trial), the keys of other builds
// are dropped once this build's own key opened the state, and the state
// counter is raised to its bound (a commit cut short before it did): a
// build that is not the default (a failed trial's, a replaced one's) no
// longer opens it.
func unlockVolume(rw io.ReadWriter, f *os.File, vol *statedisk.Volume, meta []byte, record func(kind string, data []byte) error, prune bool) ([]byte, string, error) {
	pcrs, err := tpm.ReadPCRs(rw, statedisk.SealPCRs)
	if err != nil {
		return nil, "", err
	}
	var errs []error
	try := func(pass []byte, k statedisk.Key, err error) []byte {
		defer clear(pass)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		key, err := vol.Header.Unlock(meta, k.Keyslot, pass)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if bytes.Equal(pass, statedisk.Passphrase(key)) {
			if err := writeStateSeal(pcrs, k.Sealed); err != nil {
				errs = append(errs, err)
				clear(key)
				return nil
			}
		} else {
			say("the state's passphrase is not derived from its key (a state made before updates): it will not follow an update")
		}
		return key
	}
	for _, k := range vol.Own {
		pass, err := tpm.Unseal(rw, k.Sealed, statedisk.SealPCRs)
		key := try(pass, k, err)
		if key == nil {
			continue
		}
		how := "sealed by this build"
		if prune {
			how += pruneKeys(rw, f, vol, meta, k, pcrs)
		}
		return key, how, nil
	}
	for _, h := range vol.Handovers {
		pass, err := tpm.UnsealFrom(rw, h.Sealed, statedisk.SealPCRs, h.Creator, []int{7})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key, err := vol.Header.Unlock(meta, h.Keyslot, pass)
		derived := err == nil && bytes.Equal(pass, statedisk.Passphrase(key))
		clear(pass)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !derived { // RigOS seals only derived passphrases for another build
			clear(key)
			errs = append(errs, errors.New("a handed-over key whose passphrase is not derived from the volume key"))
			continue
		}
		how := fmt.Sprintf("handed over by the build with PCR 11 %x… on an update to %s", h.Creator[11][:6], h.Build)
		// This build's own key is sealed before the handover is measured:
		// measuring moves PCR 15 on from the value the key is sealed to.
		// Its bound is the handover's: the counter as the commit leaves it.
		bound := h.Sealed.CounterBound
		if bound == nil {
			c, err := tpm.Counter(rw)
			if err != nil {
				say("reading the state counter failed: %v (this build's own key is not bound to it)", err)
			} else {
				bound = &c
			}
		}
		own, err := tpm.Seal(rw, statedisk.Passphrase(key), statedisk.SealPCRs, bound)
		if err == nil {
			var hdrs []byte
			if hdrs, err = statedisk.WithOwn(meta, own, pcrs); err == nil {
				err = writeHeaders(f, hdrs)
			}
		}
		if err != nil {
			say("sealing this build's own state key failed: %v (the handed-over key still opens the state; this build does not commit)", err)
			own = nil
		} else {
			how += "; this build's own key sealed"
		}
		if err := writeStateSeal(pcrs, own); err != nil {
			clear(key)
			return nil, "", err
		}
		if err := record(measure.KindStateKey, []byte(measure.StateKeyHandover+hex.EncodeToString(h.Creator[11]))); err != nil {
			clear(key)
			return nil, "", fmt.Errorf("measuring the state key's handover: %w", err)
		}
		return key, how, nil
	}
	// One line on the console: the errors joined with "; ".
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return nil, "", fmt.Errorf("state key: no key opens the state: %s", strings.Join(msgs, "; "))
}

// pruneKeys, on a boot that is not a trial, once this build's own key k
// opened the state: drops the other builds' keys and raises the state
// counter to k's bound. Failures are said, not fatal: the state is open.
// It returns what it did, for the console.
func pruneKeys(rw io.ReadWriter, f *os.File, vol *statedisk.Volume, meta []byte, k statedisk.Key, pcrs map[int][]byte) string {
	var how string
	if others := len(vol.Own) + len(vol.Handovers) - 1; others > 0 {
		hdrs, _, err := statedisk.WithOnly(meta, statedisk.KeyID(k.Sealed))
		if err == nil {
			err = writeHeaders(f, hdrs)
		}
		if err != nil {
			say("dropping other builds' state keys failed: %v", err)
		} else {
			how += fmt.Sprintf("; the %d other builds' keys dropped", others)
		}
	}
	if k.Sealed.CounterBound == nil {
		return how // a key from before the counter: the next update's is bound
	}
	v, err := tpm.RaiseCounter(rw, *k.Sealed.CounterBound, k.Sealed.SRKName)
	if err != nil {
		say("raising the state counter failed: %v", err)
		return how
	}
	return how + fmt.Sprintf("; state counter %d", v)
}

// writeHeaders writes both LUKS2 header copies over the start of the
// state partition, primary first.
func writeHeaders(f *os.File, hdrs []byte) error {
	if _, err := f.WriteAt(hdrs, 0); err != nil {
		return fmt.Errorf("writing the state header: %w", err)
	}
	return f.Sync()
}

// writeStateSeal records the PCR values of the unlock and the running
// build's own key (own; nil if it has none) for the agent
// (layout.StateSeal, statedisk.Unlocked).
func writeStateSeal(pcrs map[int][]byte, own *tpm.Sealed) error {
	u := statedisk.Unlocked{Values: pcrs}
	if own != nil {
		u.Key, u.Bound, u.SRKName = statedisk.KeyID(own), own.CounterBound, own.SRKName
	}
	b, err := u.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(layout.StateSeal), 0o755); err != nil {
		return err
	}
	return os.WriteFile(layout.StateSeal, b, 0o600)
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
