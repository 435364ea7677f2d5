package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/rigos/rigos/internal/sim/tpmsim"
)

func TestSealUnseal(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(2)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	phase := sha256.Sum256([]byte("modules-locked"))
	if err := Extend(sim, 15, phase[:]); err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0x5a}, 64)
	bus := &recorder{rw: sim}
	s, err := Seal(bus, secret, []int{7, 15}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.Public, secret) || bytes.Contains(s.Private, secret) {
		t.Fatal("sealed blob contains the secret in the clear")
	}
	got, err := Unseal(bus, s, []int{7, 15})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %x, %v; want the secret", got, err)
	}
	// Parameter encryption: the secret crossed the TPM bus in neither
	// direction in the clear (an interposer sees only ciphertext).
	if bytes.Contains(bus.seen.Bytes(), secret[:16]) {
		t.Fatal("the secret was on the TPM bus in the clear")
	}

	t.Run("tampered private part", func(t *testing.T) {
		bad := *s
		bad.Private = bytes.Clone(s.Private)
		bad.Private[len(bad.Private)-1] ^= 1
		if _, err := Unseal(sim, &bad, []int{7, 15}); err == nil {
			t.Fatal("a tampered sealed object was loaded")
		}
	})
	t.Run("other storage root key", func(t *testing.T) {
		bad := *s
		bad.SRKName = bytes.Clone(s.SRKName)
		bad.SRKName[len(bad.SRKName)-1] ^= 1
		if _, err := Unseal(sim, &bad, []int{7, 15}); err == nil {
			t.Fatal("unsealed under another storage root key")
		}
	})
	t.Run("truncated public part", func(t *testing.T) {
		bad := *s
		bad.Public = s.Public[:5]
		if _, err := Unseal(sim, &bad, []int{7, 15}); err == nil {
			t.Fatal("unsealed from a truncated public part")
		}
	})
	t.Run("next boot phase", func(t *testing.T) {
		next := sha256.Sum256([]byte("state-unlocked"))
		if err := Extend(sim, 15, next[:]); err != nil {
			t.Fatal(err)
		}
		_, err := Unseal(sim, s, []int{7, 15})
		if !errors.Is(err, ErrPolicy) {
			t.Fatalf("Unseal after PCR 15 moved on = %v, want ErrPolicy", err)
		}
	})
}

func TestSealRejects(t *testing.T) {
	if _, err := Seal(nil, nil, []int{7}, nil); err == nil {
		t.Error("sealed an empty secret")
	}
	if _, err := selection([]int{24}); err == nil {
		t.Error("PCR 24 accepted")
	}
	if _, err := selection(nil); err == nil {
		t.Error("empty selection accepted")
	}
}

// recorder passes TPM traffic through and keeps a copy of both
// directions, as a bus interposer would.
type recorder struct {
	rw   io.ReadWriter
	seen bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.seen.Write(p)
	return r.rw.Write(p)
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.rw.Read(p)
	r.seen.Write(p[:n])
	return n, err
}
