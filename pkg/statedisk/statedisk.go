// Package statedisk describes RigOS's encrypted STATE partition: a LUKS2
// volume (pkg/luks2: aes-xts-plain64, 512-bit volume key) whose only
// keyslot is opened by a passphrase that exists on disk only sealed by
// the node's TPM (see SealPCRs): to the Secure Boot state (PCR 7), the build
// (PCR 11) and the runtime PCR at the boot phase where init opens the
// partition (PCR 15 after "modules-locked"). The sealed passphrase is
// kept in a LUKS2 token of type TokenType, with the TPM's creation data
// and ticket, which prove the TPM created the sealed object itself at
// those PCR values (tpm.ErrForged). Init extends PCR 15 right after
// opening, so nothing that runs later, workloads included, can unseal it
// again. The owner reading the disk offline sees a LUKS2 header, a
// TPM-sealed blob and ciphertext; cryptsetup recognises the volume
// (luksDump).
//
// Init writes the LUKS2 metadata only after the file system inside is
// complete, so a first boot cut short leaves a blank partition, which the
// next boot formats again; a damaged header is never formatted over.
package statedisk

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/rigos/rigos/pkg/luks2"
	"github.com/rigos/rigos/pkg/tpm"
)

// TokenType is the LUKS2 token type holding the TPM-sealed passphrase.
const TokenType = "rigos-tpm2"

// MetadataSize is how much of the partition the metadata takes; the
// encrypted data starts there.
const MetadataSize = luks2.DataOffset

// SealPCRs are the PCRs the passphrase is sealed to, and whose values at
// creation the unseal checks (tpm.Unseal), all at the phase init opens
// the partition:
//
//   - PCR 7, the Secure Boot state: only images signed with our db key.
//   - PCR 11, the build: systemd-stub measures every section of the UKI,
//     kernel command line included, and nothing in RigOS extends PCR 11
//     later. Without it every build signed with the same db key (an old
//     vulnerable release, a UKI with lockdown=none) would open every
//     build's state.
//   - PCR 15 at "modules-locked": init's own phase, the same in every
//     build, so that nothing started later can unseal.
//
// So a build opens only the state sealed to it. An update carries the
// state to the next build: the running build, which holds the volume
// key in the kernel, seals the passphrase (Passphrase: derived from the
// key) for the next build's PCR 11, predicted from its UKI, with PCRs 7
// and 15 as init found them (tpm.SealFor; a Handover token). The next
// build unseals it with tpm.UnsealFrom, which proves the creator's PCR
// values, then seals a key of its own (WithOwn). A committed update
// leaves the running build's key alone (WithOnly), so the build it
// replaced no longer opens the state; until then it does, so a failed
// update falls back with the state. Every key is also bound to the TPM's
// state counter (tpm.CounterIndex, Sealed.CounterBound, the token's
// "counter_bound"): a handover and the next build's own key one above
// the counter, which the commit raises to that, so the replaced build's
// key stays locked out even from a header copied before the commit.
var SealPCRs = []int{7, 11, 15}

// ErrBlank means the partition has no LUKS2 header: it was never
// formatted (or its first format was cut short).
var ErrBlank = errors.New("state partition is blank")

// New returns the metadata region (MetadataSize bytes) of a new volume
// with volume key key, opened by passphrase, which s is the TPM-sealed
// copy of.
func New(key, passphrase []byte, s *tpm.Sealed, uuid string, buildPCR11 []byte) ([]byte, error) {
	return luks2.Format(key, passphrase, ownToken(s, buildPCR11), uuid)
}

// Volume is an opened (not yet unlocked) state volume.
type Volume struct {
	Header *luks2.Header
	// Sealed is the TPM-sealed passphrase of Keyslot that a build sealed
	// for itself (the first such token); nil if there is none.
	Sealed  *tpm.Sealed
	Keyslot string
	// Own are all the keys builds sealed for themselves (Sealed is the
	// first): the running build tries each.
	Own []Key
	// Handovers are copies of the passphrase a build sealed for the build
	// it updated to (tpm.SealFor).
	Handovers []Handover
	// DataOffset is where the encrypted data starts, in bytes.
	DataOffset int64
}

// Key is the passphrase sealed by a build for itself.
type Key struct {
	Sealed  *tpm.Sealed
	Keyslot string
}

// Handover is the passphrase sealed by one build for the next.
type Handover struct {
	Sealed  *tpm.Sealed
	Keyslot string
	// Creator are the values the sealed PCRs held when it was sealed
	// (tpm.UnsealFrom checks them): PCR 11 names the build that sealed it.
	Creator map[int][]byte
	// Build is the build it was sealed for (informational).
	Build string
}

// Passphrase is the passphrase of a volume with volume key key. It is
// derived from the key, so a running build, which has the key in the
// kernel, can seal it for the build it updates to; whoever has the key
// has the data anyway.
func Passphrase(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("rigos state passphrase v1"))
	return m.Sum(nil)
}

// ownToken and handoverToken are the LUKS2 tokens of a sealed
// passphrase; buildPCR11 records the build an own token is for.
func ownToken(s *tpm.Sealed, buildPCR11 []byte) luks2.Token {
	b64 := base64.StdEncoding.EncodeToString
	t := luks2.Token{
		"type": TokenType, "pcrs": s.PCRs, "policy": b64(s.Policy), "public": b64(s.Public),
		"private": b64(s.Private), "srk_name": b64(s.SRKName),
		"creation_data": b64(s.CreationData), "creation_hash": b64(s.CreationHash),
		"creation_ticket": b64(s.CreationTicket), "keyslots": []string{"0"},
	}
	if buildPCR11 != nil {
		t["build_pcr11"] = hex.EncodeToString(buildPCR11)
	}
	if s.CounterBound != nil {
		t["counter_bound"] = strconv.FormatUint(*s.CounterBound, 10)
	}
	return t
}

func handoverToken(h Handover) luks2.Token {
	t := ownToken(h.Sealed, nil)
	creator := map[string]string{}
	for p, v := range h.Creator {
		creator[strconv.Itoa(p)] = hex.EncodeToString(v)
	}
	t["creator_pcrs"], t["build"] = creator, h.Build
	return t
}

// WithHandover returns both header copies of the volume whose metadata
// region starts with meta, with h added and the keys its own builds
// sealed kept; an earlier handover is dropped (one update at a time).
// The running build must hold its key of its own (KeyID running, as
// init recorded it): if it opened the state with a handover and could
// not seal its own key, dropping that handover would leave it, should
// the update fall back, without a way in.
func WithHandover(meta []byte, h Handover, running string) ([]byte, error) {
	v, err := Read(meta)
	if err != nil {
		return nil, err
	}
	if _, _, ok := ownKey(v.Header, running); !ok {
		return nil, errors.New("the running build holds no key of its own in the state (its own key could not be sealed when it opened a handed-over one): an update that fell back could not open the state")
	}
	tokens := ownTokens(v.Header)
	tokens[strconv.Itoa(len(tokens))] = handoverToken(h)
	return luks2.WithTokens(meta, tokens)
}

// WithOwn returns both header copies with s, the passphrase the running
// build sealed for itself to values (its unlock values; PCR 11 is
// labelled for readers), replacing any earlier key sealed to the same
// values, whatever its counter bound; other builds' own keys stay (the
// build it updated from still opens the state if the update falls
// back), and handovers are dropped: they have served.
func WithOwn(meta []byte, s *tpm.Sealed, values map[int][]byte) ([]byte, error) {
	v, err := Read(meta)
	if err != nil {
		return nil, err
	}
	if p, err := tpm.PolicyFor(values, s.CounterBound); err != nil || !bytes.Equal(p, s.Policy) {
		return nil, errors.New("the key to add is not sealed to the running build's values")
	}
	tokens := map[string]luks2.Token{}
	for _, t := range ownTokens(v.Header) {
		if old, _, err := sealedFrom(t); err == nil && sealedTo(old, values) {
			continue // this build's earlier key
		}
		tokens[strconv.Itoa(len(tokens))] = t
	}
	if len(tokens) >= MaxOwnKeys {
		return nil, fmt.Errorf("state volume already holds %d builds' keys", len(tokens))
	}
	tokens[strconv.Itoa(len(tokens))] = ownToken(s, values[11])
	return luks2.WithTokens(meta, tokens)
}

// sealedTo reports whether s's sealed object unseals under values (with
// the counter bound s states, which the policy commits to).
func sealedTo(s *tpm.Sealed, values map[int][]byte) bool {
	want, err := tpm.PolicyFor(values, s.CounterBound)
	if err != nil {
		return false
	}
	p, err := tpm.SealedPolicy(s)
	return err == nil && bytes.Equal(p, want)
}

// WithOnly returns both header copies with one key alone: the running
// build's own, the one with KeyID key (the key the TPM unsealed, as
// init recorded it), so the build an update replaced, or one that
// never became the default, no longer opens the state; and that key,
// whose counter bound the caller raises the state counter to
// (tpm.RaiseCounter), so a header copied before the drop does not open
// it either. Keys are told apart by their sealed objects, not by what
// the header says beside them, which the owner could edit or forge (a
// token with a policy of the running build and a lower bound, put
// first). Without that key nothing is dropped: an error, so the running
// build is never locked out.
func WithOnly(meta []byte, key string) ([]byte, *tpm.Sealed, error) {
	v, err := Read(meta)
	if err != nil {
		return nil, nil, err
	}
	t, s, ok := ownKey(v.Header, key)
	if !ok {
		return nil, nil, errors.New("the state holds no key of the running build")
	}
	hdrs, err := luks2.WithTokens(meta, map[string]luks2.Token{"0": t})
	return hdrs, s, err
}

// ownKey returns the own-key token holding the key with KeyID id.
func ownKey(h *luks2.Header, id string) (luks2.Token, *tpm.Sealed, bool) {
	if id == "" {
		return nil, nil, false
	}
	for _, tid := range tokenIDs(h) {
		t := h.Metadata.Tokens[tid]
		if t["type"] != TokenType || t["creator_pcrs"] != nil {
			continue
		}
		s, _, err := sealedFrom(t)
		if err == nil && KeyID(s) == id {
			return t, s, true
		}
	}
	return nil, nil, false
}

// MaxOwnKeys bounds the builds whose keys a volume holds.
const MaxOwnKeys = 8

// ownTokens returns the volume's own-key tokens, renumbered from 0 in
// the order of their IDs.
func ownTokens(h *luks2.Header) map[string]luks2.Token {
	out := map[string]luks2.Token{}
	for _, id := range tokenIDs(h) {
		t := h.Metadata.Tokens[id]
		if t["type"] == TokenType && t["creator_pcrs"] == nil {
			out[strconv.Itoa(len(out))] = t
		}
	}
	return out
}

func tokenIDs(h *luks2.Header) []string {
	ids := slices.Collect(maps.Keys(h.Metadata.Tokens))
	slices.SortFunc(ids, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return ids
}

// Read parses the metadata region (at least MetadataSize bytes). It
// returns ErrBlank for a partition without a LUKS2 header.
func Read(meta []byte) (*Volume, error) {
	h, err := luks2.Parse(meta)
	if errors.Is(err, luks2.ErrNotLUKS) {
		return nil, ErrBlank
	}
	if err != nil {
		return nil, err
	}
	off, cipher, err := h.Segment0()
	if err != nil {
		return nil, err
	}
	if cipher != luks2.Cipher {
		return nil, fmt.Errorf("state volume cipher %q, want %s", cipher, luks2.Cipher)
	}
	v := &Volume{Header: h, DataOffset: off}
	for _, id := range tokenIDs(h) {
		t := h.Metadata.Tokens[id]
		if t["type"] != TokenType {
			continue
		}
		s, slot, err := sealedFrom(t)
		if err != nil {
			return nil, fmt.Errorf("state volume token %s: %w", id, err)
		}
		if t["creator_pcrs"] == nil {
			if v.Sealed == nil {
				v.Sealed, v.Keyslot = s, slot
			}
			v.Own = append(v.Own, Key{Sealed: s, Keyslot: slot})
			continue
		}
		creator, err := creatorPCRs(t["creator_pcrs"])
		if err != nil {
			return nil, fmt.Errorf("state volume token %s: %w", id, err)
		}
		build, _ := t["build"].(string)
		v.Handovers = append(v.Handovers, Handover{Sealed: s, Keyslot: slot, Creator: creator, Build: build})
	}
	if v.Sealed == nil && len(v.Handovers) == 0 {
		return nil, fmt.Errorf("state volume has no %s token", TokenType)
	}
	return v, nil
}

func creatorPCRs(v any) (map[int][]byte, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 || len(m) > 24 {
		return nil, errors.New("creator_pcrs: want an object of PCR values")
	}
	out := map[int][]byte{}
	for k, x := range m {
		p, err := strconv.Atoi(k)
		s, ok := x.(string)
		if err != nil || p < 0 || p > 23 || !ok {
			return nil, fmt.Errorf("creator_pcrs: %q", k)
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("creator_pcrs: PCR %d: want a hex SHA-256 value", p)
		}
		out[p] = b
	}
	return out, nil
}

func sealedFrom(t luks2.Token) (*tpm.Sealed, string, error) {
	str := func(k string) ([]byte, error) {
		v, ok := t[k].(string)
		if !ok {
			return nil, fmt.Errorf("%s missing", k)
		}
		return base64.StdEncoding.DecodeString(v)
	}
	var s tpm.Sealed
	var err error
	var errs []error
	for k, dst := range map[string]*[]byte{"policy": &s.Policy, "public": &s.Public, "private": &s.Private, "srk_name": &s.SRKName} {
		if *dst, err = str(k); err != nil || len(*dst) == 0 {
			errs = append(errs, fmt.Errorf("%s: missing or malformed", k))
		}
	}
	// A token from before creation checks has no creation fields: it
	// reads, and tpm.Unseal refuses it as forged. Present, they must be
	// well formed.
	for k, dst := range map[string]*[]byte{"creation_data": &s.CreationData, "creation_hash": &s.CreationHash, "creation_ticket": &s.CreationTicket} {
		if _, ok := t[k]; !ok {
			continue
		}
		if *dst, err = str(k); err != nil || len(*dst) == 0 {
			errs = append(errs, fmt.Errorf("%s: malformed", k))
		}
	}
	pcrs, _ := t["pcrs"].([]any)
	for _, p := range pcrs {
		f, ok := p.(float64)
		if !ok || f < 0 || f > 23 || f != float64(int(f)) {
			errs = append(errs, fmt.Errorf("pcr %v", p))
			continue
		}
		s.PCRs = append(s.PCRs, int(f))
	}
	if len(s.PCRs) == 0 {
		errs = append(errs, errors.New("no PCRs"))
	}
	if b, ok := t["counter_bound"]; ok {
		str, _ := b.(string)
		n, err := strconv.ParseUint(str, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("counter_bound %v: want a decimal count", b))
		}
		s.CounterBound = &n
	}
	slots, _ := t["keyslots"].([]any)
	slot, _ := func() (string, bool) {
		if len(slots) != 1 {
			return "", false
		}
		v, ok := slots[0].(string)
		return v, ok
	}()
	if slot == "" {
		errs = append(errs, errors.New("want exactly one keyslot"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}
	return &s, slot, nil
}

// Unlock returns the volume key, given the unsealed passphrase.
func (v *Volume) Unlock(meta, passphrase []byte) ([]byte, error) {
	return v.Header.Unlock(meta, v.Keyslot, passphrase)
}
