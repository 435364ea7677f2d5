package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"maps"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/rigos/rigos/internal/sim/tpmsim"
)

// A build seals the state passphrase for the next build's PCR 11; the
// next build unseals it, proving which build sealed it. A misstated
// creator, another Secure Boot state at creation, or a third build are
// refused.
func TestSealForNextBuild(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(2)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	// The test stands in the resettable PCRs 16 (the build, PCR 11) and 23
	// (the Secure Boot state, PCR 7) for a reboot: the real ones are reset
	// only by one.
	const sb, build = 23, 16
	reboot := func() {
		for _, p := range []int{sb, build} {
			if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(p), Auth: tpm2.PasswordAuth(nil)}}).Execute(transport.FromReadWriter(sim)); err != nil {
				t.Fatal(err)
			}
		}
	}
	extend := func(pcr int, what string) {
		d := sha256.Sum256([]byte(what))
		if err := Extend(sim, pcr, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	pcrs := []int{sb, build}
	reboot()
	extend(sb, "secure boot on")
	extend(build, "build 1")
	creator, err := ReadPCRs(sim, pcrs)
	if err != nil {
		t.Fatal(err)
	}

	// What build 2 will hold where init unseals, predicted by build 1.
	next := maps.Clone(creator)
	h := sha256.New()
	h.Write(make([]byte, 32))
	d := sha256.Sum256([]byte("build 2"))
	h.Write(d[:])
	next[build] = h.Sum(nil)
	secret := bytes.Repeat([]byte{7}, 32)
	s, err := SealFor(sim, secret, next, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Still build 1: the policy does not hold.
	if _, err := UnsealFrom(sim, s, pcrs, creator, []int{sb}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("build 1 unsealed what it sealed for build 2: %v", err)
	}

	reboot()
	extend(sb, "secure boot on")
	extend(build, "build 2")
	got, err := UnsealFrom(sim, s, pcrs, creator, []int{sb})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("build 2: UnsealFrom = %x, %v; want the secret", got, err)
	}
	// The plain Unseal refuses it: it was created at other values.
	if _, err := Unseal(sim, s, pcrs); !errors.Is(err, ErrForged) {
		t.Errorf("Unseal of a handed-over secret = %v, want ErrForged", err)
	}
	liar := maps.Clone(creator)
	liar[build] = next[build] // "build 2 sealed it itself"
	if _, err := UnsealFrom(sim, s, pcrs, liar, []int{sb}); !errors.Is(err, ErrForged) {
		t.Errorf("a misstated creator: %v, want ErrForged", err)
	}
	other7 := maps.Clone(creator)
	other7[sb] = make([]byte, 32)
	if _, err := UnsealFrom(sim, s, pcrs, other7, nil); !errors.Is(err, ErrForged) {
		t.Errorf("a misstated PCR 7 at creation: %v, want ErrForged", err)
	}
	if _, err := UnsealFrom(sim, s, pcrs, map[int][]byte{sb: creator[sb]}, []int{sb}); !errors.Is(err, ErrForged) {
		t.Errorf("creator values missing: %v, want ErrForged", err)
	}

	// A boot whose Secure Boot state differs from the creator's.
	reboot()
	extend(sb, "secure boot off")
	extend(build, "build 2")
	if _, err := UnsealFrom(sim, s, pcrs, creator, []int{sb}); err == nil {
		t.Error("unsealed with another Secure Boot state")
	}
	// Build 3 does not open what was sealed for build 2.
	reboot()
	extend(sb, "secure boot on")
	extend(build, "build 3")
	if _, err := UnsealFrom(sim, s, pcrs, creator, []int{sb}); !errors.Is(err, ErrPolicy) {
		t.Errorf("build 3 = %v, want ErrPolicy", err)
	}
}

func TestSealForRejects(t *testing.T) {
	if _, err := SealFor(nil, []byte("x"), map[int][]byte{11: make([]byte, 20)}, nil); err == nil {
		t.Error("a SHA-1 sized value was accepted")
	}
	if _, err := SealFor(nil, nil, map[int][]byte{11: make([]byte, 32)}, nil); err == nil {
		t.Error("an empty secret was accepted")
	}
}
