package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/rigos/rigos/agent/internal/installer"
	"github.com/rigos/rigos/pkg/devmapper"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/statedisk"
	"github.com/rigos/rigos/pkg/tpm"
	"github.com/rigos/rigos/pkg/update"
)

// handOver seals the state's passphrase for the build whose UKI (for
// the slot being written) is uki, and adds it to the state header, so
// that build opens the state when it boots (init's unlockVolume): its
// PCR 11 is predicted from the UKI, PCRs 7 and 15 are what they held
// when init unlocked the state (layout.StateSeal). It is bound to the
// state counter at one more than it is once raised to the running
// build's own bound (a raise its commit did not finish): the next build
// opens it before and after its commit raises the counter, and no build
// committed later does. openTPM opens a TPM connection of its own (the
// kernel's resource manager keeps it apart from the session's).
func handOver(openTPM func() (io.ReadWriteCloser, error), ukiFile io.ReaderAt, build string) error {
	unlocked, err := readStateSeal()
	if err != nil {
		return err
	}
	values := maps.Clone(unlocked.Values)
	if values[11], err = update.PredictPCR11(ukiFile); err != nil {
		return err
	}
	targets, err := devmapper.Table(layout.StateMapping)
	if err != nil {
		return err
	}
	key, err := devmapper.CryptKey(targets)
	if err != nil {
		return err
	}
	defer clear(key)
	pass := statedisk.Passphrase(key)
	defer clear(pass)

	rw, err := openTPM()
	if err != nil {
		return err
	}
	defer rw.Close()
	c, err := tpm.Counter(rw)
	if unlocked.Bound != nil && err == nil {
		c, err = tpm.RaiseCounter(rw, *unlocked.Bound, unlocked.SRKName)
	}
	if err != nil {
		return err
	}
	bound := c + 1
	// The agent's own measurements extend PCR 15 at any time: the creator
	// values are read on both sides of the seal, and it is sealed again
	// if one came in between.
	var sealed *tpm.Sealed
	var creator map[int][]byte
	for range 3 {
		before, err := tpm.ReadPCRs(rw, statedisk.SealPCRs)
		if err != nil {
			return err
		}
		if sealed, err = tpm.SealFor(rw, pass, values, &bound); err != nil {
			return err
		}
		after, err := tpm.ReadPCRs(rw, statedisk.SealPCRs)
		if err != nil {
			return err
		}
		if maps.EqualFunc(before, after, bytes.Equal) {
			creator = before
			break
		}
	}
	if creator == nil {
		return errors.New("PCRs kept changing while sealing the state key")
	}

	return rewriteHeader(targets, func(meta []byte) ([]byte, error) {
		return statedisk.WithHandover(meta, statedisk.Handover{Sealed: sealed, Keyslot: "0", Creator: creator, Build: build}, unlocked.Key)
	})
}

// dropOtherKeys leaves the running build's state key alone in the
// header, once an update to it is committed, and raises the state
// counter to that key's bound: the build it replaced no longer opens the
// state, not even from a copy of the header made before.
func dropOtherKeys(openTPM func() (io.ReadWriteCloser, error)) error {
	unlocked, err := readStateSeal()
	if err != nil {
		return err
	}
	targets, err := devmapper.Table(layout.StateMapping)
	if err != nil {
		return err
	}
	var kept *tpm.Sealed
	if err := rewriteHeader(targets, func(meta []byte) ([]byte, error) {
		hdrs, s, err := statedisk.WithOnly(meta, unlocked.Key)
		kept = s
		return hdrs, err
	}); err != nil {
		return err
	}
	if kept.CounterBound == nil {
		return nil // a key from before the counter: init binds the next one
	}
	rw, err := openTPM()
	if err != nil {
		return err
	}
	defer rw.Close()
	_, err = tpm.RaiseCounter(rw, *kept.CounterBound, kept.SRKName)
	return err
}

// rewriteHeader rewrites the LUKS2 header copies of the state volume
// under the crypt target with what change makes of its metadata.
func rewriteHeader(targets []devmapper.Target, change func(meta []byte) ([]byte, error)) error {
	if len(targets) != 1 {
		return fmt.Errorf("the state mapping has %d targets", len(targets))
	}
	dev, err := underlyingDevice(targets[0].Params)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	meta := make([]byte, statedisk.MetadataSize)
	if _, err := f.ReadAt(meta, 0); err != nil {
		return fmt.Errorf("reading the state header: %w", err)
	}
	hdrs, err := change(meta)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(hdrs, 0); err != nil {
		return fmt.Errorf("writing the state header: %w", err)
	}
	return f.Sync()
}

// readStateSeal reads how init unlocked the state (layout.StateSeal):
// without it there is no state to hand over.
func readStateSeal() (*statedisk.Unlocked, error) {
	b, err := os.ReadFile(layout.StateSeal)
	if errors.Is(err, os.ErrNotExist) {
		return nil, installer.ErrNoState
	}
	if err != nil {
		return nil, err
	}
	u, err := statedisk.ParseUnlocked(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", layout.StateSeal, err)
	}
	return u, nil
}

// underlyingDevice returns the device node of a crypt target's device
// ("MAJOR:MINOR" in its parameters), through sysfs.
func underlyingDevice(params string) (string, error) {
	f := strings.Fields(params)
	if len(f) < 4 || !strings.Contains(f[3], ":") {
		return "", fmt.Errorf("crypt target parameters %q name no device", params)
	}
	uevent, err := os.ReadFile(filepath.Join("/sys/dev/block", filepath.Base(f[3]), "uevent"))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(uevent), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok && name != "" && !strings.Contains(name, "..") {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("device %s has no name", f[3])
}
