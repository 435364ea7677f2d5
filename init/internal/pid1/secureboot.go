package pid1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rigos/rigos/pkg/layout"
)

// EFI variable GUIDs: the global variables (SecureBoot, SetupMode, PK,
// KEK) and the image security database (db).
const (
	efiGlobal        = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
	efiImageSecurity = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
)

// authAttributes are the attributes of PK, KEK and db: non-volatile,
// boot-service and runtime access, time-based authenticated writes.
const authAttributes uint32 = 0x1 | 0x2 | 0x4 | 0x20

// EFIVarsDir is where efivarfs is mounted.
const EFIVarsDir = layout.EFIVarsDir

// sbState is the firmware's Secure Boot state.
type sbState struct{ secureBoot, setupMode bool }

// readSBState reads SecureBoot and SetupMode from an efivarfs folder.
// A variable that is absent reads as off (firmware without Secure Boot
// support has neither).
func readSBState(dir string) (sbState, error) {
	var s sbState
	for _, v := range []struct {
		name string
		to   *bool
	}{{"SecureBoot", &s.secureBoot}, {"SetupMode", &s.setupMode}} {
		b, err := os.ReadFile(filepath.Join(dir, v.name+"-"+efiGlobal))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return s, fmt.Errorf("reading %s: %w", v.name, err)
		case len(b) != 5:
			return s, fmt.Errorf("%s: %d bytes, want 4 of attributes and 1 of value", v.name, len(b))
		}
		*v.to = b[4] == 1
	}
	return s, nil
}

// enrolment is one variable to write: its efivarfs name and the signed
// payload from the initramfs.
type enrolment struct{ file, payload string }

// enrolments are written in this order: db and KEK while the firmware is
// in Setup Mode, then PK, which ends it.
var enrolments = []enrolment{
	{"db-" + efiImageSecurity, layout.SecureBootDB},
	{"KEK-" + efiGlobal, layout.SecureBootKEK},
	{"PK-" + efiGlobal, layout.SecureBootPK},
}

// enrolKeys writes RigOS's signed db, KEK and PK into the efivarfs folder
// dir, reading the payloads under root (the initramfs is "/"). unlock is
// called on a variable that exists already (efivarfs marks variables
// immutable) before it is replaced.
func enrolKeys(dir, root string, unlock func(path string) error) error {
	for _, e := range enrolments {
		payload, err := os.ReadFile(filepath.Join(root, e.payload))
		if err != nil {
			return fmt.Errorf("the image's signed %s: %w", e.file, err)
		}
		p := filepath.Join(dir, e.file)
		if _, err := os.Stat(p); err == nil {
			if err := unlock(p); err != nil {
				return fmt.Errorf("%s: %w", e.file, err)
			}
		}
		// efivarfs takes a variable in one write: attributes, then data.
		buf := binary.LittleEndian.AppendUint32(nil, authAttributes)
		buf = append(buf, payload...)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("writing %s: %w", e.file, err)
		}
		_, err = f.Write(buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s (the firmware refused it): %w", e.file, err)
		}
	}
	return nil
}

// SecureBootOffHelp is what a supplier must do when Secure Boot is off
// and the firmware is not in Setup Mode.
const SecureBootOffHelp = "Secure Boot is off and the firmware is not in Setup Mode, so this rig cannot be trusted: " +
	"in the firmware setup, clear the Secure Boot keys (\"Reset to Setup Mode\" or \"Delete all keys\") and boot this stick again, " +
	"and RigOS enrols its own keys; or turn Secure Boot on if RigOS's keys are already enrolled"
