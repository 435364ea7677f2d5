package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestSealUnseal(t *testing.T) {
	if !SimulatorAvailable {
		t.Skip("simulator needs cgo")
	}
	sim, err := OpenSimulator(2)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	phase := sha256.Sum256([]byte("modules-locked"))
	if err := Extend(sim, 15, phase[:]); err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0x5a}, 64)
	s, err := Seal(sim, secret, []int{7, 15})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.Public, secret) || bytes.Contains(s.Private, secret) {
		t.Fatal("sealed blob contains the secret in the clear")
	}
	got, err := Unseal(sim, s)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %x, %v; want the secret", got, err)
	}

	t.Run("tampered private part", func(t *testing.T) {
		bad := *s
		bad.Private = bytes.Clone(s.Private)
		bad.Private[len(bad.Private)-1] ^= 1
		if _, err := Unseal(sim, &bad); err == nil {
			t.Fatal("a tampered sealed object was loaded")
		}
	})
	t.Run("other storage root key", func(t *testing.T) {
		bad := *s
		bad.SRKName = bytes.Clone(s.SRKName)
		bad.SRKName[len(bad.SRKName)-1] ^= 1
		if _, err := Unseal(sim, &bad); err == nil {
			t.Fatal("unsealed under another storage root key")
		}
	})
	t.Run("truncated public part", func(t *testing.T) {
		bad := *s
		bad.Public = s.Public[:5]
		if _, err := Unseal(sim, &bad); err == nil {
			t.Fatal("unsealed from a truncated public part")
		}
	})
	t.Run("next boot phase", func(t *testing.T) {
		next := sha256.Sum256([]byte("state-unlocked"))
		if err := Extend(sim, 15, next[:]); err != nil {
			t.Fatal(err)
		}
		_, err := Unseal(sim, s)
		if !errors.Is(err, ErrPolicy) {
			t.Fatalf("Unseal after PCR 15 moved on = %v, want ErrPolicy", err)
		}
	})
}

func TestSealRejects(t *testing.T) {
	if _, err := Seal(nil, nil, []int{7}); err == nil {
		t.Error("sealed an empty secret")
	}
	if _, err := selection([]int{24}); err == nil {
		t.Error("PCR 24 accepted")
	}
	if _, err := selection(nil); err == nil {
		t.Error("empty selection accepted")
	}
}
