package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// CounterIndex is the NV index of the state counter: a TPM monotonic
// counter that every update's commit raises, and that each state key is
// bound to (Sealed.CounterBound). A key unseals only while the counter
// is at most its bound, so the build an update replaced cannot open the
// newer state even from a header copied before the commit. The index
// is in the owner's range of NV handles.
const CounterIndex = tpm2.TPMHandle(0x01005247)

// MaxRaise bounds how far RaiseCounter moves the counter in one call.
const MaxRaise = 16

// ErrCounter means the state counter has moved past the bound the
// secret is sealed with: a newer build committed an update.
var ErrCounter = errors.New("the TPM's state counter has moved past this key's bound (a newer build was committed)")

// counterPublic is the NV public area of the state counter as RigOS
// defines it: a counter anyone may read and count up with an empty
// password (counting up only locks old keys out), no dictionary-attack
// lockout. Once counted (written) its name is fixed.
func counterPublic(written bool) tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: CounterIndex,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTCounter,
			Written: written},
		DataSize: 8,
	}
}

// counterName is the name of the state counter once counted: what a
// key's policy commits to.
func counterName() []byte {
	pub := counterPublic(true)
	n, err := tpm2.NVName(&pub)
	if err != nil {
		panic(fmt.Sprintf("tpm: name of the state counter: %v", err))
	}
	return n.Buffer
}

// Counter returns the state counter's value. The first call on a TPM
// defines it and counts it once (a counter reads only once counted; the
// TPM starts it at the highest value any counter in it ever had, so
// deleting and defining it again never moves it back). An index at the
// counter's handle that is not RigOS's counter is an error.
func Counter(rw io.ReadWriter) (uint64, error) {
	t := transport.FromReadWriter(rw)
	name, err := counter(t)
	if err != nil {
		return 0, err
	}
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: CounterIndex, Name: name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: CounterIndex, Name: name},
		Size:       8,
	}.Execute(t)
	if err != nil {
		return 0, fmt.Errorf("reading the state counter: %w", err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("reading the state counter: %d bytes", len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// counter makes sure the state counter is there, counted, and RigOS's,
// and returns its name.
func counter(t transport.TPM) (tpm2.TPM2BName, error) {
	for range 3 { // define, count, read
		pub, err := tpm2.NVReadPublic{NVIndex: CounterIndex}.Execute(t)
		if errors.Is(err, tpm2.TPMRCHandle) {
			def := counterPublic(false)
			if _, err := (tpm2.NVDefineSpace{
				AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
				PublicInfo: tpm2.New2B(def),
			}).Execute(t); err != nil {
				return tpm2.TPM2BName{}, fmt.Errorf("defining the state counter (NV index %#x) with the owner hierarchy: %w (a TPM whose owner password was set elsewhere: clear the TPM in the firmware setup)", uint32(CounterIndex), err)
			}
			continue
		}
		if err != nil {
			return tpm2.TPM2BName{}, fmt.Errorf("reading the state counter's public area: %w", err)
		}
		got, err := pub.NVPublic.Contents()
		if err != nil {
			return tpm2.TPM2BName{}, fmt.Errorf("the state counter's public area: %w", err)
		}
		fresh := counterPublic(false)
		switch {
		case bytes.Equal(tpm2.Marshal(got), tpm2.Marshal(counterPublic(true))):
			return pub.NVName, nil
		case bytes.Equal(tpm2.Marshal(got), tpm2.Marshal(fresh)):
			// Defined but never counted: count it once.
			if _, err := (tpm2.NVIncrement{
				AuthHandle: tpm2.AuthHandle{Handle: CounterIndex, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)},
				NVIndex:    tpm2.NamedHandle{Handle: CounterIndex, Name: pub.NVName},
			}).Execute(t); err != nil {
				return tpm2.TPM2BName{}, fmt.Errorf("counting the state counter: %w", err)
			}
			continue
		default:
			return tpm2.TPM2BName{}, fmt.Errorf("NV index %#x holds something other than RigOS's state counter (attributes %#x): clear the TPM in the firmware setup", uint32(CounterIndex), tpm2.Marshal(got.Attributes))
		}
	}
	return tpm2.TPM2BName{}, errors.New("the state counter did not come into being")
}

// RaiseCounter counts the state counter up until it is at least to, and
// returns its value. It moves it by at most MaxRaise: a bound further
// ahead than that is not one RigOS sealed. Its commands run in an HMAC
// session salted with the storage root key, which must be the one
// named srkName (the key's Sealed.SRKName): the TPM's answers are
// authenticated, so a probe on the TPM bus cannot drop an increment and
// answer for the TPM.
func RaiseCounter(rw io.ReadWriter, to uint64, srkName []byte) (uint64, error) {
	t := transport.FromReadWriter(rw)
	name, err := counter(t)
	if err != nil {
		return 0, err
	}
	srk, pub, flush, err := createSRK(t)
	if err != nil {
		return 0, err
	}
	defer flush()
	if !bytes.Equal(tpm2.Marshal(srk.Name), srkName) {
		return 0, errors.New("raising the state counter: this TPM's storage root key is not the one the state key is sealed under")
	}
	auth := func() tpm2.AuthHandle {
		return tpm2.AuthHandle{Handle: CounterIndex, Name: name,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Salted(srk.Handle, pub), tpm2.Auth(nil))}
	}
	read := func() (uint64, error) {
		rsp, err := tpm2.NVRead{AuthHandle: auth(), NVIndex: tpm2.NamedHandle{Handle: CounterIndex, Name: name}, Size: 8}.Execute(t)
		if err != nil {
			return 0, fmt.Errorf("reading the state counter: %w", err)
		}
		if len(rsp.Data.Buffer) != 8 {
			return 0, fmt.Errorf("reading the state counter: %d bytes", len(rsp.Data.Buffer))
		}
		return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
	}
	v, err := read()
	if err != nil || v >= to {
		return v, err
	}
	if to-v > MaxRaise {
		return v, fmt.Errorf("raising the state counter from %d to %d: more than %d", v, to, MaxRaise)
	}
	for ; v < to; v++ {
		if _, err := (tpm2.NVIncrement{AuthHandle: auth(), NVIndex: tpm2.NamedHandle{Handle: CounterIndex, Name: name}}).Execute(t); err != nil {
			return v, fmt.Errorf("raising the state counter: %w", err)
		}
	}
	if v, err = read(); err == nil && v < to {
		err = fmt.Errorf("the state counter is %d after raising it to %d", v, to)
	}
	return v, err
}

// policyCounterDigest extends the policy digest prev with TPM2_PolicyNV
// on the state counter: its value at most bound.
func policyCounterDigest(prev []byte, bound uint64) []byte {
	args := sha256.New()
	args.Write(binary.BigEndian.AppendUint64(nil, bound))
	args.Write([]byte{0, 0}) // offset
	args.Write(binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMEOUnsignedLE)))
	h := sha256.New()
	h.Write(prev)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCPolicyNV)))
	h.Write(args.Sum(nil))
	h.Write(counterName())
	return h.Sum(nil)
}

// policyCounter runs TPM2_PolicyNV on the state counter in session:
// its value at most bound.
func policyCounter(t transport.TPM, session tpm2.TPMHandle, bound uint64) error {
	name, err := counter(t)
	if err != nil {
		return err
	}
	_, err = tpm2.PolicyNV{
		AuthHandle:    tpm2.AuthHandle{Handle: CounterIndex, Name: name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:       tpm2.NamedHandle{Handle: CounterIndex, Name: name},
		PolicySession: session,
		OperandB:      tpm2.TPM2BOperand{Buffer: binary.BigEndian.AppendUint64(nil, bound)},
		Operation:     tpm2.TPMEOUnsignedLE,
	}.Execute(t)
	if errors.Is(err, tpm2.TPMRCPolicy) {
		return ErrCounter
	}
	return err
}
