package statedisk

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/rigos/rigos/internal/sim/tpmsim"
	"github.com/rigos/rigos/pkg/luks2"
	"github.com/rigos/rigos/pkg/tpm"
)

func sealed() *tpm.Sealed { return sealedWith([]byte{1}) }

// vals are the unlock values (SealPCRs) of build b.
func vals(b byte) map[int][]byte {
	return map[int][]byte{7: bytes.Repeat([]byte{7}, 32), 11: bytes.Repeat([]byte{b}, 32), 15: bytes.Repeat([]byte{15}, 32)}
}

// sealedFor is a key sealed to values and, if set, a counter bound.
func sealedFor(t *testing.T, values map[int][]byte, bound *uint64) *tpm.Sealed {
	t.Helper()
	p, err := tpm.PolicyFor(values, bound)
	if err != nil {
		t.Fatal(err)
	}
	s := sealedWith(p)
	s.CounterBound = bound
	return s
}

func count(n uint64) *uint64 { return &n }

// sealedWith is a sealed object (as a token holds it) whose public area
// carries policy.
func sealedWith(policy []byte) *tpm.Sealed {
	pub := tpm2.Marshal(tpm2.New2B(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256, AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
	}))
	return &tpm.Sealed{
		PCRs: []int{7, 11, 15}, Policy: policy, Public: pub, Private: []byte{4, 5}, SRKName: []byte{6},
		CreationData: []byte{7, 8}, CreationHash: []byte{9}, CreationTicket: []byte{10, 11},
	}
}

func TestRoundTrip(t *testing.T) {
	key, pass := make([]byte, luks2.KeySize), make([]byte, 64)
	rand.Read(key)
	rand.Read(pass)
	meta, err := New(key, pass, sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Read(meta)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sealed(), v.Sealed); diff != "" || v.Keyslot != "0" || v.DataOffset != MetadataSize {
		t.Fatalf("Read(New(...)) = %+v; sealed (-want +got):\n%s", v, diff)
	}
	got, err := v.Unlock(meta, pass)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Unlock = %x, %v", got, err)
	}
}

func TestReadRejects(t *testing.T) {
	if _, err := Read(make([]byte, MetadataSize)); !errors.Is(err, ErrBlank) {
		t.Errorf("zeros: %v, want ErrBlank", err)
	}
	key := make([]byte, luks2.KeySize)
	// A LUKS2 volume without our token (formatted by someone else) is
	// not blank and not ours: never formatted over.
	plain, err := luks2.Format(key, []byte("p"), nil, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(plain); err == nil || errors.Is(err, ErrBlank) {
		t.Errorf("volume without the token: %v", err)
	}
	// A token with a PCR out of range or a missing blob.
	bad, err := luks2.Format(key, []byte("p"), luks2.Token{"type": TokenType, "pcrs": []int{7, 99}, "public": "AA=="}, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bad); err == nil {
		t.Error("a malformed token was accepted")
	}
	// Creation fields: absent (a volume from before creation checks)
	// reads, for tpm.Unseal to refuse as forged; present, they must be
	// well-formed base64 and not empty.
	old := sealed()
	old.CreationData, old.CreationHash, old.CreationTicket = nil, nil, nil
	tok := func(s *tpm.Sealed, set map[string]any) luks2.Token {
		b64 := base64.StdEncoding.EncodeToString
		t := luks2.Token{
			"type": TokenType, "pcrs": s.PCRs, "policy": b64(s.Policy), "public": b64(s.Public),
			"private": b64(s.Private), "srk_name": b64(s.SRKName),
		}
		for k, v := range set {
			t[k] = v
		}
		return t
	}
	oldMeta, err := luks2.Format(key, []byte("p"), tok(old, nil), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Read(oldMeta); err != nil || v.Sealed.CreationData != nil || v.Sealed.CreationTicket != nil {
		t.Errorf("Read(token without creation fields) = %+v, %v; want no creation data, nil", v, err)
	}
	for _, set := range []map[string]any{
		{"creation_data": "not base64!"},
		{"creation_hash": ""},
		{"creation_ticket": 12},
		{"counter_bound": 12},
		{"counter_bound": "-1"},
	} {
		m, err := luks2.Format(key, []byte("p"), tok(old, set), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Read(m); err == nil {
			t.Errorf("Read(token with %v) accepted", set)
		}
	}
	// Both header copies damaged: an error, not blank.
	good, _ := New(key, []byte("p"), sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", nil)
	good[5000] ^= 1
	good[luks2.HeaderSize+5000] ^= 1
	if _, err := Read(good); err == nil || errors.Is(err, ErrBlank) {
		t.Errorf("damaged headers: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	meta, _ := New(make([]byte, luks2.KeySize), []byte("p"), sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", nil)
	f.Add(meta[:luks2.HeaderSize])
	old := sealed()
	old.CreationData, old.CreationHash, old.CreationTicket = nil, nil, nil
	meta, _ = New(make([]byte, luks2.KeySize), []byte("p"), old, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", nil)
	f.Add(meta[:luks2.HeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := make([]byte, MetadataSize)
		copy(buf, b)
		v, err := Read(buf)
		if err == nil && (v.Sealed == nil || v.Keyslot == "") {
			t.Fatal("read a volume without its sealed passphrase")
		}
	})
}

// TestSealPCRsBindBuild: the passphrase sealed to SealPCRs by build A
// does not unseal under build B, signed with the same db key (same
// PCR 7) and at the same phase (same PCR 15), whose UKI measures to
// another PCR 11 (another release, or the same one with lockdown=none on
// its command line); build A booted again unseals it.
func TestSealPCRsBindBuild(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("simulator needs cgo")
	}
	sim, err := tpmsim.Open(3)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	boot := func(build string) {
		t.Helper()
		if err := sim.(interface{ Reset() error }).Reset(); err != nil {
			t.Fatal(err)
		}
		for _, e := range []struct {
			pcr int
			v   string
		}{{7, "secure boot: rigos db"}, {11, build}, {15, "modules-locked"}} {
			d := sha256.Sum256([]byte(e.v))
			if err := tpm.Extend(sim, e.pcr, d[:]); err != nil {
				t.Fatal(err)
			}
		}
	}
	boot("rigos 2.0")
	pass := []byte("state passphrase")
	s, err := tpm.Seal(sim, pass, SealPCRs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, build := range []string{"rigos 1.0 (retired)", "rigos 2.0 lockdown=none"} {
		boot(build)
		if got, err := tpm.Unseal(sim, s, SealPCRs); !errors.Is(err, tpm.ErrPolicy) {
			t.Errorf("%s: Unseal = %q, %v; want ErrPolicy", build, got, err)
		}
	}
	boot("rigos 2.0")
	if got, err := tpm.Unseal(sim, s, SealPCRs); err != nil || !bytes.Equal(got, pass) {
		t.Errorf("rigos 2.0 again: Unseal = %q, %v; want the passphrase", got, err)
	}
}

// An update adds a handover beside the build's own key; the next build
// adds its own and drops the handover; the first build's key stays (the
// update may still fall back to it). The passphrase and data never
// change.
func TestHandoverAndOwnKeys(t *testing.T) {
	key := make([]byte, luks2.KeySize)
	rand.Read(key)
	one := sealedFor(t, vals(1), count(1))
	meta, err := New(key, Passphrase(key), one, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", vals(1)[11])
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Read(meta); err != nil || v.Sealed.CounterBound == nil || *v.Sealed.CounterBound != 1 {
		t.Fatalf("the counter bound did not round-trip: %+v, %v", v, err)
	}
	apply := func(hdrs []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		meta = append(hdrs, meta[len(hdrs):]...)
	}
	h := Handover{Sealed: sealedFor(t, vals(2), count(2)), Keyslot: "0", Creator: vals(1), Build: "two"}
	if _, err := WithHandover(meta, h, KeyID(sealedFor(t, vals(3), count(1)))); err == nil {
		t.Error("a handover was added for a running build without a key of its own")
	}
	apply(WithHandover(meta, h, KeyID(one)))
	apply(WithHandover(meta, h, KeyID(one))) // again: still one handover
	v, err := Read(meta)
	if err != nil {
		t.Fatal(err)
	}
	if v.Sealed == nil || len(v.Handovers) != 1 || v.Handovers[0].Build != "two" || !bytes.Equal(v.Handovers[0].Creator[11], vals(1)[11]) ||
		!bytes.Equal(v.Handovers[0].Sealed.Policy, h.Sealed.Policy) {
		t.Fatalf("after the handover: %+v", v)
	}
	if _, err := WithOwn(meta, sealedFor(t, vals(2), count(2)), vals(3)); err == nil {
		t.Error("WithOwn added a key not sealed to the running build's values")
	}
	apply(WithOwn(meta, sealedFor(t, vals(2), nil), vals(2)))
	apply(WithOwn(meta, sealedFor(t, vals(2), count(2)), vals(2))) // replaced, not added, whatever the bound
	v, err = Read(meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Handovers) != 0 || len(v.Own) != 2 || !bytes.Equal(v.Sealed.Policy, one.Policy) || v.Own[1].Sealed.CounterBound == nil {
		t.Fatalf("after build two sealed its own key: %d handovers, own keys %+v", len(v.Handovers), v.Own)
	}
	if got, err := v.Unlock(meta, Passphrase(key)); err != nil || !bytes.Equal(got, key) {
		t.Errorf("Unlock = %v", err)
	}
	// A handover whose creator values are malformed is refused.
	bad := handoverToken(h)
	bad["creator_pcrs"] = map[string]string{"11": "zz"}
	m, _ := luks2.Format(key, []byte("p"), bad, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if _, err := Read(m); err == nil || !strings.Contains(err.Error(), "creator_pcrs") {
		t.Errorf("malformed creator: %v", err)
	}
}

// After a commit only the running build's key is left, the one init
// recorded as opening the state, and WithOnly returns it with its
// counter bound; a build without its key drops nothing. What the header
// says beside a key (its build, its bound) does not fool it, nor does a
// forged token with the running build's policy and a lower bound.
func TestWithOnly(t *testing.T) {
	key := make([]byte, luks2.KeySize)
	meta, err := New(key, Passphrase(key), sealedFor(t, vals(1), count(4)), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11", vals(1)[11])
	if err != nil {
		t.Fatal(err)
	}
	two := sealedFor(t, vals(2), count(5))
	hdrs, err := WithOwn(meta, two, vals(2))
	if err != nil {
		t.Fatal(err)
	}
	meta = append(hdrs, meta[len(hdrs):]...)
	if _, _, err := WithOnly(meta, KeyID(sealedFor(t, vals(3), count(5)))); err == nil {
		t.Error("WithOnly for a build without a key dropped the others")
	}
	if _, _, err := WithOnly(meta, ""); err == nil {
		t.Error("WithOnly with no key recorded dropped the others")
	}
	// The owner puts first a token of their own making: the running
	// build's policy at a lower bound, another sealed object.
	forged := sealedFor(t, vals(2), count(4))
	forged.Private = []byte("the owner's")
	h, err := luks2.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]luks2.Token{"0": ownToken(forged, vals(2)[11])}
	for _, tok := range ownTokens(h) {
		tokens[strconv.Itoa(len(tokens))] = tok
	}
	fh, err := luks2.WithTokens(meta, tokens)
	if err != nil {
		t.Fatal(err)
	}
	withForged := relabel(t, append(fh, meta[len(fh):]...), "build_pcr11", hex.EncodeToString(vals(2)[11]))
	hdrs, kept, err := WithOnly(withForged, KeyID(two))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Read(append(hdrs, withForged[len(hdrs):]...)); len(v.Own) != 1 || KeyID(v.Own[0].Sealed) != KeyID(two) || *kept.CounterBound != 5 {
		t.Errorf("WithOnly kept %+v (bound %v), not the key that opened the state", v.Own, kept.CounterBound)
	}
	hdrs, kept, err = WithOnly(meta, KeyID(two))
	if err != nil {
		t.Fatal(err)
	}
	meta = append(hdrs, meta[len(hdrs):]...)
	v, err := Read(meta)
	if err != nil || len(v.Own) != 1 || !bytes.Equal(v.Own[0].Sealed.Policy, two.Policy) || kept.CounterBound == nil || *kept.CounterBound != 5 {
		t.Fatalf("after WithOnly: %+v, %+v, %v", v, kept, err)
	}
}

// What init records of the unlock reads back; malformed records are
// refused.
func TestUnlocked(t *testing.T) {
	u := Unlocked{Values: vals(1), Key: KeyID(sealed()), Bound: count(7)}
	b, err := u.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseUnlocked(b)
	if err != nil || got.Key != u.Key || *got.Bound != 7 || !bytes.Equal(got.Values[11], u.Values[11]) {
		t.Fatalf("ParseUnlocked(Marshal()) = %+v, %v", got, err)
	}
	for _, bad := range []string{`{}`, `{"7":"00","11":"00","15":"00"}`, `not json`,
		`{"7":"` + strings.Repeat("00", 32) + `","11":"` + strings.Repeat("00", 32) + `","15":"` + strings.Repeat("00", 32) + `","key":"zz"}`,
		`{"7":"` + strings.Repeat("00", 32) + `","11":"` + strings.Repeat("00", 32) + `","15":"` + strings.Repeat("00", 32) + `","counter_bound":"-2"}`} {
		if _, err := ParseUnlocked([]byte(bad)); err == nil {
			t.Errorf("ParseUnlocked(%s) accepted", bad)
		}
	}
}

// relabel sets field to value in every token of the volume, as an owner
// editing the header offline could.
func relabel(t *testing.T, meta []byte, field, value string) []byte {
	t.Helper()
	h, err := luks2.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]luks2.Token{}
	for id, tok := range h.Metadata.Tokens {
		tok[field] = value
		tokens[id] = tok
	}
	hdrs, err := luks2.WithTokens(meta, tokens)
	if err != nil {
		t.Fatal(err)
	}
	return append(hdrs, meta[len(hdrs):]...)
}
