package tpm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/rigos/rigos/internal/sim/tpmsim"
)

// A key bound to the state counter unseals while the counter is at most
// its bound; once the counter is raised past it (an update committed),
// it no longer does, not even after the counter is deleted and defined
// again. A token stating another bound, or none, does not unseal.
func TestCounterBoundsKeys(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(3)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	tp := transport.FromReadWriter(sim)
	c, err := Counter(sim)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Counter(sim); err != nil || again != c {
		t.Fatalf("Counter again = %d, %v; want %d", again, err, c)
	}
	pcrs := []int{7, 15}
	secret := bytes.Repeat([]byte{9}, 32)
	old, err := Seal(sim, secret, pcrs, &c)
	if err != nil {
		t.Fatal(err)
	}
	next := c + 1
	newer, err := Seal(sim, secret, pcrs, &next)
	if err != nil {
		t.Fatal(err)
	}
	values, err := ReadPCRs(sim, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := PolicyFor(values, &c); !bytes.Equal(p, old.Policy) {
		t.Error("PolicyFor(values, bound) is not the sealed object's policy")
	}
	if got, err := Unseal(sim, old, pcrs); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal at the bound = %x, %v", got, err)
	}
	for name, b := range map[string]*uint64{"another bound": &next, "no bound": nil} {
		forged := *old
		forged.CounterBound = b
		if _, err := Unseal(sim, &forged, pcrs); !errors.Is(err, ErrPolicy) {
			t.Errorf("a token stating %s: %v, want ErrPolicy", name, err)
		}
	}

	if _, err := RaiseCounter(sim, next, []byte("another TPM's")); err == nil {
		t.Error("RaiseCounter with another storage root key's name raised the counter")
	}
	if v, err := RaiseCounter(sim, next, old.SRKName); err != nil || v != next {
		t.Fatalf("RaiseCounter(%d) = %d, %v", next, v, err)
	}
	if _, err := Unseal(sim, old, pcrs); !errors.Is(err, ErrCounter) {
		t.Errorf("Unseal past the bound = %v, want ErrCounter", err)
	}
	if got, err := Unseal(sim, newer, pcrs); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("the newer key = %x, %v", got, err)
	}
	if _, err := RaiseCounter(sim, next+MaxRaise+1, old.SRKName); err == nil {
		t.Error("RaiseCounter moved the counter further than MaxRaise")
	}

	// The owner deletes the counter and defines it again: it does not
	// come back lower.
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	name := tpm2.TPM2BName{Buffer: counterName()}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: CounterIndex, Name: name}}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	if v, err := Counter(sim); err != nil || v < next {
		t.Fatalf("after deleting the counter: %d, %v; want at least %d", v, err, next)
	}
	if _, err := Unseal(sim, old, pcrs); !errors.Is(err, ErrCounter) {
		t.Errorf("Unseal past the bound, counter defined again = %v, want ErrCounter", err)
	}

	// Something else at the counter's index: an ordinary index whose
	// value the owner writes.
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: CounterIndex, Name: name}}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	plain := counterPublic(false)
	plain.Attributes.NT = tpm2.TPMNTOrdinary
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(plain)}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	if _, err := Counter(sim); err == nil || !strings.Contains(err.Error(), "something other than RigOS's state counter") {
		t.Errorf("Counter over an ordinary index = %v", err)
	}
	if _, err := Unseal(sim, newer, pcrs); err == nil {
		t.Error("a key unsealed against an ordinary index at the counter's handle")
	}
}
