package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/rigos/rigos/internal/sim/tpmsim"
)

// statePCRs is the set RigOS seals the state key to (statedisk.SealPCRs,
// which imports this package).
var statePCRs = []int{7, 11, 15}

// boot reboots the simulator (PCRs back to zero, seeds and hierarchy
// proofs kept) and brings PCRs 7, 11 and 15 to what a boot of build
// reaches at the phase init opens the state partition: the same Secure
// Boot state every time, PCR 11 from the build's UKI sections.
func boot(t testing.TB, sim io.ReadWriteCloser, build string) {
	t.Helper()
	if err := sim.(interface{ Reset() error }).Reset(); err != nil {
		t.Fatal(err)
	}
	for pcr, v := range map[int]string{7: "secure boot: rigos db", 11: build, 15: "modules-locked"} {
		d := sha256.Sum256([]byte(v))
		if err := Extend(sim, pcr, d[:]); err != nil {
			t.Fatal(err)
		}
	}
}

func openSim(t testing.TB) io.ReadWriteCloser {
	t.Helper()
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(2)
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

// forge does what the owner can do from another OS on the same TPM:
// TPM2_Create under the storage root key, with a secret they know, a
// policy they chose (read from the genuine token, or computed offline)
// and whatever creation PCRs they like, at whatever values the PCRs hold
// now. It returns the token they would write, with the creation data the
// TPM gave them.
func forge(t *testing.T, rw io.ReadWriter, secret, policy []byte, attrs tpm2.TPMAObject, pcrs, creationPCRs []int) *Sealed {
	t.Helper()
	tp := transport.FromReadWriter(rw)
	srk, _, flush, err := createSRK(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer flush()
	var csel tpm2.TPMLPCRSelection
	if creationPCRs != nil {
		if csel, err = selection(creationPCRs); err != nil {
			t.Fatal(err)
		}
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash,
				&tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		}),
		CreationPCR: csel,
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	return &Sealed{
		PCRs: pcrs, Policy: policy,
		Public: tpm2.Marshal(rsp.OutPublic), Private: tpm2.Marshal(rsp.OutPrivate),
		SRKName:        tpm2.Marshal(srk.Name),
		CreationData:   rsp.CreationData.Bytes(),
		CreationHash:   rsp.CreationHash.Buffer,
		CreationTicket: tpm2.Marshal(rsp.CreationTicket),
	}
}

// policyOnly unseals s the way RigOS did before creation checks: the PCR
// policy alone, in the same salted, encrypted session. It shows a forged
// object would unseal but for them.
func policyOnly(t testing.TB, rw io.ReadWriter, s *Sealed) []byte {
	t.Helper()
	tp := transport.FromReadWriter(rw)
	sel, err := selection(s.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	priv, _ := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	srk, srkPub, flush, err := createSRK(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer flush()
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv, InPublic: *pub,
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(tp) }()
	sess, closeSess, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16,
		tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.Handle, srkPub))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	out, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}.Execute(tp)
	if err != nil {
		t.Fatalf("the policy alone does not unseal it: %v", err)
	}
	return out.OutData.Buffer
}

// TestUnsealRefusesForged: the owner, from another OS on the same TPM,
// creates sealed objects whose policy is the genuine one (read from the
// genuine token) and whose secret they know; the genuine boot must
// refuse every one as forged, although the policy alone would unseal it.
func TestUnsealRefusesForged(t *testing.T) {
	sim := openSim(t)
	defer sim.Close()

	boot(t, sim, "build A")
	genuine, err := Seal(sim, bytes.Repeat([]byte{0x5a}, 64), statePCRs, nil)
	if err != nil {
		t.Fatal(err)
	}
	owners := []byte("the owner knows this passphrase")

	// The owner's OS: same Secure Boot state (PCR 7), its own PCR 11,
	// PCR 15 wherever the owner likes.
	boot(t, sim, "owner's OS")
	noCreation := forge(t, sim, owners, genuine.Policy, sealedAttrs, statePCRs, nil)
	atOwners := forge(t, sim, owners, genuine.Policy, sealedAttrs, statePCRs, statePCRs)
	otherCreationPCRs := forge(t, sim, owners, genuine.Policy, sealedAttrs, statePCRs, []int{7})
	withPassword := forge(t, sim, owners, genuine.Policy,
		tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true, UserWithAuth: true}, statePCRs, statePCRs)
	// PCR 7 alone is the same in the owner's OS: an object sealed to
	// PCR 7 alone, created at its genuine value, has honest creation data.
	sel7, _ := selection([]int{7})
	policy7, err := pcrPolicy(transport.FromReadWriter(sim), sel7, tpm2.Trial())
	if err != nil {
		t.Fatal(err)
	}
	pcr7Only := forge(t, sim, owners, policy7, sealedAttrs, []int{7}, []int{7})

	boot(t, sim, "build A")
	strip := func(s *Sealed) *Sealed {
		c := *s
		c.CreationData, c.CreationHash, c.CreationTicket = nil, nil, nil
		return &c
	}
	genuineTicket := *atOwners
	genuineTicket.CreationData, genuineTicket.CreationHash, genuineTicket.CreationTicket =
		genuine.CreationData, genuine.CreationHash, genuine.CreationTicket
	rewritten := *atOwners
	rewritten.CreationData, rewritten.CreationHash = genuine.CreationData, genuine.CreationHash

	for _, tc := range []struct {
		name        string
		s           *Sealed
		wouldUnseal bool
	}{
		{"no creation data", strip(noCreation), true},
		{"created at the owner's PCR values", atOwners, true},
		{"other PCRs recorded at creation", otherCreationPCRs, true},
		{"ticket of the genuine object", &genuineTicket, true},
		{"genuine creation data with the owner's ticket", &rewritten, true},
		{"userWithAuth set", withPassword, true},
		{"sealed to PCR 7 alone", pcr7Only, true},
		{"genuine object without its creation data", strip(genuine), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wouldUnseal && !bytes.Equal(policyOnly(t, sim, tc.s), owners) {
				t.Fatal("the policy alone did not give the owner's secret: the attack is not set up")
			}
			got, err := Unseal(sim, tc.s, statePCRs)
			if !errors.Is(err, ErrForged) {
				t.Fatalf("Unseal(%s) = %q, %v; want ErrForged", tc.name, got, err)
			}
			t.Log(err)
		})
	}

	// The genuine object still unseals, on a later boot of the same build.
	got, err := Unseal(sim, genuine, statePCRs)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 64)) {
		t.Fatalf("Unseal(genuine) = %x, %v; want the secret", got, err)
	}
}

// TestUnsealOtherBuild: a state key sealed by build A does not unseal
// under build B, whose UKI (command line included) measures to another
// PCR 11, although PCR 7 and 15 are the same; build A booted again does.
func TestUnsealOtherBuild(t *testing.T) {
	sim := openSim(t)
	defer sim.Close()
	boot(t, sim, "build A")
	secret := []byte("state passphrase")
	s, err := Seal(sim, secret, statePCRs, nil)
	if err != nil {
		t.Fatal(err)
	}
	boot(t, sim, "build B (lockdown=none)")
	if got, err := Unseal(sim, s, statePCRs); !errors.Is(err, ErrPolicy) {
		t.Fatalf("build B: Unseal = %q, %v; want ErrPolicy", got, err)
	}
	boot(t, sim, "build A")
	if got, err := Unseal(sim, s, statePCRs); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("build A again: Unseal = %q, %v; want the secret", got, err)
	}
}

// BenchmarkUnseal times Unseal with its creation check against the PCR
// policy alone, on the simulator (a real TPM is slower; the ratio is what
// carries over).
func BenchmarkUnseal(b *testing.B) {
	sim := openSim(b)
	defer sim.Close()
	boot(b, sim, "build A")
	s, err := Seal(sim, []byte("state passphrase"), statePCRs, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("checked", func(b *testing.B) {
		for b.Loop() {
			if _, err := Unseal(sim, s, statePCRs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("policy-only", func(b *testing.B) {
		for b.Loop() {
			policyOnly(b, sim, s)
		}
	})
}
