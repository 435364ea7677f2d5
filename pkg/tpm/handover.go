package tpm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// SealFor seals secret to PCR values that need not be the current ones
// (PCR index → SHA-256 value): a running build seals the state
// passphrase for the build it updates to, whose PCR 11 it predicts from
// that build's UKI. As with Seal, the TPM records in the creation data
// the values the same PCRs hold now, the creator's: UnsealFrom checks
// them against what the secret's holder says they were.
func SealFor(rw io.ReadWriter, secret []byte, values map[int][]byte, bound *uint64) (*Sealed, error) {
	for p, v := range values {
		if len(v) != sha256.Size {
			return nil, fmt.Errorf("sealing: PCR %d value of %d bytes, want %d", p, len(v), sha256.Size)
		}
	}
	policy, err := PolicyFor(values, bound)
	if err != nil {
		return nil, err
	}
	return seal(rw, secret, sortedSet(mapKeys(values)), bound, func(transport.TPM, tpm2.TPMLPCRSelection) ([]byte, error) { return policy, nil })
}

// ReadPCRs returns the current SHA-256 values of pcrs.
func ReadPCRs(rw io.ReadWriter, pcrs []int) (map[int][]byte, error) {
	pcrs = sortedSet(pcrs)
	sel, err := selection(pcrs)
	if err != nil {
		return nil, err
	}
	values, err := pcrValues(transport.FromReadWriter(rw), sel)
	if err != nil {
		return nil, err
	}
	out := map[int][]byte{}
	for i, p := range pcrs {
		out[p] = values[i]
	}
	return out, nil
}

// UnsealFrom is Unseal for a secret another boot sealed for this one
// with SealFor. Its creation data records the values pcrs held when it
// was sealed, which the holder says were creator (every PCR of pcrs):
// the TPM's creation ticket proves them, so a secret whose creator is
// misstated is refused as forged. Each PCR in same must also have held
// at creation what it holds now (PCR 7: the creator booted through the
// same Secure Boot chain). The caller decides whether the proven creator
// (its PCR 11: which build) is one it accepts.
func UnsealFrom(rw io.ReadWriter, s *Sealed, pcrs []int, creator map[int][]byte, same []int) ([]byte, error) {
	return unseal(rw, s, pcrs, func(current [][]byte) ([]byte, error) {
		ordered := make([][]byte, 0, len(pcrs))
		for i, p := range sortedSet(pcrs) {
			v := creator[p]
			if len(v) != sha256.Size {
				return nil, fmt.Errorf("no creator value for PCR %d", p)
			}
			if slices.Contains(same, p) && !bytes.Equal(v, current[i]) {
				return nil, fmt.Errorf("created while PCR %d held another value than now", p)
			}
			ordered = append(ordered, v)
		}
		return digestOf(ordered), nil
	})
}

// PolicyFor is the policy digest of a secret sealed to values and, if
// bound is set, the state counter at most *bound (what Seal and SealFor
// put in the sealed object's authPolicy).
func PolicyFor(values map[int][]byte, bound *uint64) ([]byte, error) {
	pcrs := sortedSet(mapKeys(values))
	sel, err := selection(pcrs)
	if err != nil {
		return nil, err
	}
	ordered := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		ordered[i] = values[p]
	}
	d := policyPCRDigest(sel, digestOf(ordered))
	if bound != nil {
		d = policyCounterDigest(d, *bound)
	}
	return d, nil
}

// SealedPolicy returns the authPolicy of s's sealed object: the policy it
// unseals under, bound to the object (unlike Sealed.Policy, a copy for
// readers).
func SealedPolicy(s *Sealed) ([]byte, error) {
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return nil, fmt.Errorf("public part: %w", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("public part: %w", err)
	}
	return pub.AuthPolicy.Buffer, nil
}

func mapKeys(m map[int][]byte) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
