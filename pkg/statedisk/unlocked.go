package statedisk

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/rigos/rigos/pkg/tpm"
)

// KeyID names a sealed key by its sealed object (public and private
// areas), not by anything beside it in the header: two tokens with the
// same ID hold the same object.
func KeyID(s *tpm.Sealed) string {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s.Public))))
	h.Write(s.Public)
	h.Write(s.Private)
	return hex.EncodeToString(h.Sum(nil))
}

// Unlocked is what init records of how it opened the state
// (layout.StateSeal) for the agent: the values SealPCRs held, and the
// running build's own key, the one the TPM unsealed (or that init
// sealed after a handover). An update seals the passphrase for the next
// build with these values; its commit keeps this key alone and raises
// the state counter to its bound.
type Unlocked struct {
	Values map[int][]byte
	// Key is the KeyID of the running build's own key ("" if it has
	// none), Bound its counter bound (nil: none), SRKName the storage
	// root key it is sealed under.
	Key     string
	Bound   *uint64
	SRKName []byte
}

// Marshal encodes u as JSON: each PCR's value in hex under its number,
// "key" and "counter_bound".
func (u Unlocked) Marshal() ([]byte, error) {
	out := map[string]string{}
	for p, v := range u.Values {
		out[strconv.Itoa(p)] = hex.EncodeToString(v)
	}
	if u.Key != "" {
		out["key"] = u.Key
	}
	if u.Bound != nil {
		out["counter_bound"] = strconv.FormatUint(*u.Bound, 10)
	}
	if u.SRKName != nil {
		out["srk_name"] = hex.EncodeToString(u.SRKName)
	}
	return json.Marshal(out)
}

// ParseUnlocked decodes what Marshal wrote; every PCR of SealPCRs must
// be there.
func ParseUnlocked(b []byte) (*Unlocked, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	u := &Unlocked{Values: map[int][]byte{}, Key: m["key"]}
	for _, p := range SealPCRs {
		v, err := hex.DecodeString(m[strconv.Itoa(p)])
		if err != nil || len(v) != sha256.Size {
			return nil, fmt.Errorf("PCR %d: want a hex SHA-256 value", p)
		}
		u.Values[p] = v
	}
	if u.Key != "" {
		if k, err := hex.DecodeString(u.Key); err != nil || len(k) != sha256.Size {
			return nil, fmt.Errorf("key %q: want a hex SHA-256 value", u.Key)
		}
	}
	if s, ok := m["srk_name"]; ok {
		n, err := hex.DecodeString(s)
		if err != nil || len(n) == 0 {
			return nil, fmt.Errorf("srk_name %q: want hex", s)
		}
		u.SRKName = n
	}
	if s, ok := m["counter_bound"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("counter_bound %q: want a decimal count", s)
		}
		u.Bound = &n
	}
	return u, nil
}
