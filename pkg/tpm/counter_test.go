package tpm

import (
	"bytes"
	"encoding/binary"
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
	// unsealWithIndex, used below against the owner's index, unseals
	// with the counter itself.
	if err := unsealWithIndex(tp, newer, tpm2.NamedHandle{Handle: CounterIndex, Name: tpm2.TPM2BName{Buffer: counterName()}}); err != nil {
		t.Errorf("unsealWithIndex on the counter: %v", err)
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
	// The TPM itself refuses: the owner writes 0 into their index and
	// satisfies PolicyNV with it, bypassing RigOS's own check of the
	// index; the key's policy names the counter, not this index.
	pub, err := tpm2.NVReadPublic{NVIndex: CounterIndex}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	idx := tpm2.NamedHandle{Handle: CounterIndex, Name: pub.NVName}
	if _, err := (tpm2.NVWrite{AuthHandle: tpm2.AuthHandle{Handle: CounterIndex, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}, NVIndex: idx,
		Data: tpm2.TPM2BMaxNVBuffer{Buffer: make([]byte, 8)}}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	if err := unsealWithIndex(tp, newer, idx); err == nil {
		t.Error("the TPM unsealed a key with PolicyNV satisfied by the owner's own index")
	}
	if _, err := Unseal(sim, newer, pcrs); err == nil {
		t.Error("a key unsealed against an ordinary index at the counter's handle")
	}
}

// unsealWithIndex loads s and unseals it in a policy session of
// PolicyPCR and a PolicyNV on idx (counter value at most s's bound), as
// an owner with RigOS's code bypassed would.
func unsealWithIndex(tp transport.TPM, s *Sealed, idx tpm2.NamedHandle) error {
	srk, _, flush, err := createSRK(tp)
	if err != nil {
		return err
	}
	defer flush()
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return err
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	if err != nil {
		return err
	}
	obj, err := tpm2.Load{ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate: *priv, InPublic: *pub2b}.Execute(tp)
	if err != nil {
		return err
	}
	defer tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(tp)
	sel, err := selection(s.PCRs)
	if err != nil {
		return err
	}
	sess, closeSess, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return err
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(tp); err != nil {
		return err
	}
	if _, err := (tpm2.PolicyNV{AuthHandle: tpm2.AuthHandle{Handle: idx.Handle, Name: idx.Name, Auth: tpm2.PasswordAuth(nil)}, NVIndex: idx,
		PolicySession: sess.Handle(), OperandB: tpm2.TPM2BOperand{Buffer: binary.BigEndian.AppendUint64(nil, *s.CounterBound)},
		Operation: tpm2.TPMEOUnsignedLE}).Execute(tp); err != nil {
		return err
	}
	_, err = tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}.Execute(tp)
	return err
}
