package tpm

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/rigos/rigos/internal/sim/tpmsim"
)

func TestOpenMissingDevice(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0"))
	if !errors.Is(err, ErrNoTPM) {
		t.Fatalf("Open(missing) = %v, want ErrNoTPM", err)
	}
}

func TestSimulatorRoundTrip(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	dev := WithLog(sim, []byte("log"))
	defer dev.Close()
	// TPM2_GetRandom(8): a real command through the channel.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := dev.Write(cmd); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 64)
	n, err := dev.Read(resp)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10+2+8 || resp[9] != 0 {
		t.Fatalf("GetRandom response = %x, want success with 8 bytes", resp[:n])
	}
	got, _ := dev.MeasurementLog()
	if string(got) != "log" {
		t.Fatalf("MeasurementLog() = %q, want %q", got, "log")
	}
}
