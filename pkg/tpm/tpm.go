// Package tpm opens the machine's TPM 2.0. It is the only place in RigOS
// that opens a TPM device; everything else receives an io.ReadWriteCloser.
//
// On a real rig the kernel's resource manager (/dev/tpmrm0) is preferred,
// with the raw device (/dev/tpm0) as fallback. Tests and the demo use the
// go-tpm-tools simulator (package internal/sim/tpmsim, cgo builds only).
package tpm

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultPaths are the devices Open tries, in order.
var DefaultPaths = []string{"/dev/tpmrm0", "/dev/tpm0"}

// ErrNoTPM is returned when no TPM device could be opened.
var ErrNoTPM = errors.New("no TPM device found")

// FirmwareLogPath is where Linux exposes the firmware's TCG event log.
const FirmwareLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// Device is an open TPM: a command channel plus the firmware event log
// that belongs to it.
type Device interface {
	io.ReadWriteCloser
	// MeasurementLog returns the firmware event log for this TPM.
	MeasurementLog() ([]byte, error)
}

// Open opens the first TPM device in paths (DefaultPaths when empty).
// The firmware event log is read from FirmwareLogPath.
func Open(paths ...string) (Device, error) {
	if len(paths) == 0 {
		paths = DefaultPaths
	}
	var errs []error
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			return &device{File: f, logPath: FirmwareLogPath}, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoTPM, errors.Join(errs...))
}

type device struct {
	*os.File
	logPath string
}

func (d *device) MeasurementLog() ([]byte, error) {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return nil, fmt.Errorf("reading firmware event log: %w", err)
	}
	return b, nil
}

// WithLog wraps a command channel with an in-memory firmware event log.
// It is how a simulator is given the log of a simulated boot.
func WithLog(rwc io.ReadWriteCloser, log []byte) Device {
	return &withLog{ReadWriteCloser: rwc, log: log}
}

type withLog struct {
	io.ReadWriteCloser
	log []byte
}

func (w *withLog) MeasurementLog() ([]byte, error) {
	return append([]byte(nil), w.log...), nil
}

// Extend extends a SHA-256 digest into PCR pcr of the TPM behind rw.
func Extend(rw io.ReadWriter, pcr int, digest []byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: digest},
		}},
	}.Execute(transport.FromReadWriter(rw))
	if err != nil {
		return fmt.Errorf("extending PCR %d: %w", pcr, err)
	}
	return nil
}
