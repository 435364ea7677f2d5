package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Sealed is a secret sealed by the TPM to the values some PCRs had when
// it was sealed. Only this TPM can load it (the parent is this TPM's
// storage root key), and it unseals only while those PCRs hold the same
// values again. Public and Private are the TPM's own structures
// (TPM2B_PUBLIC, TPM2B_PRIVATE); SRKName pins the storage root key it was
// sealed under, so a substituted parent key is noticed.
//
// CreationData (TPMS_CREATION_DATA), CreationHash and CreationTicket
// (TPMT_TK_CREATION) are what TPM2_Create returned: the TPM's word that
// it created this very object itself, while the PCRs held the values
// the secret is sealed to. Unseal checks them, so a sealed object made
// elsewhere (see ErrForged) is refused even when its policy would let it
// unseal. Policy repeats the public area's authPolicy for readers of the
// token; Unseal checks the public area's.
type Sealed struct {
	PCRs           []int  `json:"pcrs"`
	Policy         []byte `json:"policy"`
	Public         []byte `json:"public"`
	Private        []byte `json:"private"`
	SRKName        []byte `json:"srk_name"`
	CreationData   []byte `json:"creation_data"`
	CreationHash   []byte `json:"creation_hash"`
	CreationTicket []byte `json:"creation_ticket"`
	// CounterBound, if set, binds the secret to the state counter too
	// (CounterIndex): it unseals only while the counter is at most this.
	// The policy commits to it: a token stating another bound, or none,
	// does not unseal.
	CounterBound *uint64 `json:"counter_bound,omitempty"`
}

// ErrPolicy means the PCRs no longer hold the values the secret was
// sealed to: another boot chain, Secure Boot state, build, or a later
// boot phase.
var ErrPolicy = errors.New("PCR values differ from those the secret was sealed to")

// ErrForged means the sealed object is not one this TPM created at the
// PCR values it is sealed to: its creation data is missing, names other
// PCRs or other values, or its creation ticket is not this TPM's for this
// object; or its public area is not a sealed object Seal makes. Someone
// who can run TPM2_Create under the storage root key (the owner, from
// another OS on the same TPM) can make an object whose policy is that of
// the genuine PCR values and whose secret they know, but not a creation
// ticket saying it was created at those values: a ticket is an HMAC under
// the hierarchy's proof, which never leaves the TPM, and the TPM makes one
// only for an object it creates, over the PCR values it then holds.
var ErrForged = errors.New("sealed object was not created by this TPM at the PCR values it is sealed to")

// MaxSealedSecret bounds a sealed secret (a TPM2B_SENSITIVE_DATA).
const MaxSealedSecret = 128

// sealedAttrs are the object attributes of every sealed object Seal
// makes: bound to this TPM and this parent, no password (userWithAuth
// clear: the PCR policy is the only way to use it), no dictionary-attack
// lockout (a policy failure is not a guessed password).
var sealedAttrs = tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true}

// Seal seals secret to the current values of pcrs (SHA-256 bank). The
// secret travels to the TPM encrypted (an AES-CFB parameter-encryption
// session salted with the storage root key), so it is never on the TPM
// bus in the clear. The TPM also records the values of pcrs at creation
// in the object's creation data, which Unseal checks. With bound, the
// secret also unseals only while the state counter (Counter) is at most
// *bound.
func Seal(rw io.ReadWriter, secret []byte, pcrs []int, bound *uint64) (*Sealed, error) {
	return seal(rw, secret, pcrs, bound, func(t transport.TPM, sel tpm2.TPMLPCRSelection) ([]byte, error) {
		d, err := pcrPolicy(t, sel, tpm2.Trial())
		if err != nil || bound == nil {
			return d, err
		}
		return policyCounterDigest(d, *bound), nil
	})
}

// seal seals secret under the policy policy returns, recording the
// current values of pcrs in the creation data.
func seal(rw io.ReadWriter, secret []byte, pcrs []int, bound *uint64, policy func(transport.TPM, tpm2.TPMLPCRSelection) ([]byte, error)) (*Sealed, error) {
	if len(secret) == 0 || len(secret) > MaxSealedSecret {
		return nil, fmt.Errorf("sealing: secret of %d bytes (want 1-%d)", len(secret), MaxSealedSecret)
	}
	t := transport.FromReadWriter(rw)
	sel, err := selection(pcrs)
	if err != nil {
		return nil, err
	}
	srk, pub, flush, err := createSRK(t)
	if err != nil {
		return nil, err
	}
	defer flush()

	digest, err := policy(t, sel)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: srk.Handle, Name: srk.Name,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.Handle, pub)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: sealedAttrs,
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: digest},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash,
				&tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		}),
		CreationPCR: sel,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	if bound != nil {
		b := *bound
		bound = &b
	}
	return &Sealed{
		PCRs: slices.Clone(pcrs), Policy: digest, CounterBound: bound,
		Public: tpm2.Marshal(rsp.OutPublic), Private: tpm2.Marshal(rsp.OutPrivate),
		SRKName:        tpm2.Marshal(srk.Name),
		CreationData:   rsp.CreationData.Bytes(),
		CreationHash:   rsp.CreationHash.Buffer,
		CreationTicket: tpm2.Marshal(rsp.CreationTicket),
	}, nil
}

// Unseal returns the secret if s was sealed by Seal on this TPM to
// exactly the PCRs pcrs, and they hold the values it was sealed to.
// pcrs is what the caller requires, not what s claims: a token naming
// fewer PCRs is refused. The error wraps ErrPolicy when the PCRs hold
// other values (another build, boot chain or boot phase), and ErrForged
// when the TPM did not create this object itself at the values it is
// sealed to (see ErrForged), which includes a Sealed without creation
// data. The creation check compares the PCR values at creation with the
// current ones, so Unseal must run at the boot phase Seal ran at. The
// secret comes back encrypted on the bus.
//
// Unseal does not tell whether the object was created by RigOS rather
// than by other code running at the same PCR values: the PCRs must be
// chosen so that only RigOS runs with those values.
func Unseal(rw io.ReadWriter, s *Sealed, pcrs []int) ([]byte, error) {
	return unseal(rw, s, pcrs, func(current [][]byte) ([]byte, error) { return digestOf(current), nil })
}

// unseal is Unseal with the PCR digest the creation data must record
// computed by atCreation from the current values of pcrs (in order).
func unseal(rw io.ReadWriter, s *Sealed, pcrs []int, atCreation func(current [][]byte) ([]byte, error)) ([]byte, error) {
	t := transport.FromReadWriter(rw)
	sel, err := selection(pcrs)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(sortedSet(s.PCRs), sortedSet(pcrs)) {
		return nil, fmt.Errorf("unsealing: %w: sealed to PCRs %v, want %v", ErrForged, s.PCRs, pcrs)
	}
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return nil, fmt.Errorf("unsealing: public part: %w", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("unsealing: public part: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	if err != nil {
		return nil, fmt.Errorf("unsealing: private part: %w", err)
	}
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 || pub.ObjectAttributes != sealedAttrs {
		return nil, fmt.Errorf("unsealing: %w: not a sealed object as Seal makes (keyed hash, SHA-256 name, attributes fixedTPM|fixedParent|noDA alone)", ErrForged)
	}
	// A policy for other PCR values than the current ones does not
	// unseal here, whoever made the object.
	values, err := pcrValues(t, sel)
	if err != nil {
		return nil, fmt.Errorf("unsealing: %w", err)
	}
	want := policyPCRDigest(sel, digestOf(values))
	if s.CounterBound != nil {
		want = policyCounterDigest(want, *s.CounterBound)
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, want) {
		return nil, fmt.Errorf("unsealing: %w", ErrPolicy)
	}

	srk, srkPub, flush, err := createSRK(t)
	if err != nil {
		return nil, err
	}
	defer flush()
	if got := tpm2.Marshal(srk.Name); !bytes.Equal(got, s.SRKName) {
		return nil, errors.New("unsealing: this TPM's storage root key is not the one the secret was sealed under (another TPM, or the TPM was cleared)")
	}
	created, err := atCreation(values)
	if err != nil {
		return nil, fmt.Errorf("unsealing: %w: %w", ErrForged, err)
	}
	ticket, err := creation(s, sel, created, srk.Name)
	if err != nil {
		return nil, fmt.Errorf("unsealing: %w: %w", ErrForged, err)
	}
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub2b,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("unsealing: loading the sealed object: %w", err)
	}
	defer func() { _, _ = tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(t) }()

	// The TPM checks the ticket: an HMAC, under the owner hierarchy's
	// proof, of the object's name and the creation data's hash. With no
	// signing key (TPM_RH_NULL) nothing is signed, but the check stands.
	cert, err := tpm2.CertifyCreation{
		SignHandle:     tpm2.TPMRHNull,
		ObjectHandle:   tpm2.NamedHandle{Handle: obj.ObjectHandle, Name: obj.Name},
		CreationHash:   tpm2.TPM2BDigest{Buffer: s.CreationHash},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		CreationTicket: *ticket,
	}.Execute(t)
	if err != nil {
		var rc tpm2.TPMRC
		if errors.As(err, &rc) {
			return nil, fmt.Errorf("unsealing: %w: the TPM rejected the creation ticket: %w", ErrForged, err)
		}
		return nil, fmt.Errorf("unsealing: certifying creation: %w", err)
	}
	if err := certified(cert, obj.Name, s.CreationHash); err != nil {
		return nil, fmt.Errorf("unsealing: %w: %w", ErrForged, err)
	}

	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.Handle, srkPub))
	if err != nil {
		return nil, fmt.Errorf("unsealing: policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
		return nil, fmt.Errorf("unsealing: PolicyPCR: %w", err)
	}
	if s.CounterBound != nil {
		if err := policyCounter(t, sess.Handle(), *s.CounterBound); err != nil {
			return nil, fmt.Errorf("unsealing: %w", err)
		}
	}
	out, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCPolicyFail) {
			return nil, fmt.Errorf("unsealing: %w", ErrPolicy)
		}
		return nil, fmt.Errorf("unsealing: %w", err)
	}
	return out.OutData.Buffer, nil
}

// creation checks s's creation data against what a genuine Seal at the
// current PCR values (their digest: current) under srkName records, and returns the ticket for
// the TPM to check. It is pure: the ticket itself only the TPM can check.
func creation(s *Sealed, sel tpm2.TPMLPCRSelection, current []byte, srkName tpm2.TPM2BName) (*tpm2.TPMTTKCreation, error) {
	if len(s.CreationData) == 0 || len(s.CreationHash) == 0 || len(s.CreationTicket) == 0 {
		return nil, errors.New("no creation data (forged, or sealed before creation was checked)")
	}
	if h := sha256.Sum256(s.CreationData); !bytes.Equal(h[:], s.CreationHash) {
		return nil, errors.New("creation hash is not the hash of the creation data")
	}
	cd, err := tpm2.Unmarshal[tpm2.TPMSCreationData](s.CreationData)
	if err != nil {
		return nil, fmt.Errorf("creation data: %w", err)
	}
	ticket, err := tpm2.Unmarshal[tpm2.TPMTTKCreation](s.CreationTicket)
	if err != nil {
		return nil, fmt.Errorf("creation ticket: %w", err)
	}
	got, err := pcrsOf(cd.PCRSelect)
	if err != nil {
		return nil, fmt.Errorf("creation data: %w", err)
	}
	want, _ := pcrsOf(sel)
	if !slices.Equal(got, want) {
		return nil, fmt.Errorf("created with PCRs %v recorded, want %v", got, want)
	}
	if !bytes.Equal(cd.PCRDigest.Buffer, current) {
		return nil, fmt.Errorf("created while PCRs %v held other values", want)
	}
	if !bytes.Equal(cd.ParentName.Buffer, srkName.Buffer) {
		return nil, errors.New("created under another parent than the storage root key")
	}
	if ticket.Tag != tpm2.TPMSTCreation || ticket.Hierarchy != tpm2.TPMRHOwner {
		return nil, fmt.Errorf("creation ticket tag %v hierarchy %v, want a creation ticket of the owner hierarchy", ticket.Tag, ticket.Hierarchy)
	}
	return ticket, nil
}

// certified checks what TPM2_CertifyCreation attested: the creation of
// the object named name, with creation hash hash.
func certified(rsp *tpm2.CertifyCreationResponse, name tpm2.TPM2BName, hash []byte) error {
	att, err := rsp.CertifyInfo.Contents()
	if err != nil {
		return fmt.Errorf("creation certificate: %w", err)
	}
	if att.Type != tpm2.TPMSTAttestCreation {
		return fmt.Errorf("creation certificate of type %v", att.Type)
	}
	info, err := att.Attested.Creation()
	if err != nil {
		return fmt.Errorf("creation certificate: %w", err)
	}
	if !bytes.Equal(info.ObjectName.Buffer, name.Buffer) || !bytes.Equal(info.CreationHash.Buffer, hash) {
		return errors.New("creation certificate is for another object or creation")
	}
	return nil
}

// pcrValues reads the PCRs in sel (one bank, at most 8 PCRs: one read)
// and returns their values in order.
func pcrValues(t transport.TPM, sel tpm2.TPMLPCRSelection) ([][]byte, error) {
	rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("reading PCRs: %w", err)
	}
	want, _ := pcrsOf(sel)
	got, err := pcrsOf(rsp.PCRSelectionOut)
	if err != nil || !slices.Equal(got, want) || len(rsp.PCRValues.Digests) != len(want) {
		return nil, fmt.Errorf("reading PCRs: the TPM returned PCRs %v (%d values), want %v", got, len(rsp.PCRValues.Digests), want)
	}
	out := make([][]byte, len(want))
	for i, d := range rsp.PCRValues.Digests {
		out[i] = d.Buffer
	}
	return out, nil
}

// digestOf is the hash of PCR values in order, as TPM2_PolicyPCR and
// creation data compute it.
func digestOf(values [][]byte) []byte {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return h.Sum(nil)
}

// policyPCRDigest is the policy digest of a trial session that ran only
// TPM2_PolicyPCR(sel) at PCR values hashing to pcrDigest (TPM 2.0 Part 3,
// 23.7): SHA-256(0…0 ‖ TPM_CC_PolicyPCR ‖ sel ‖ pcrDigest).
func policyPCRDigest(sel tpm2.TPMLPCRSelection, pcrDigest []byte) []byte {
	h := sha256.New()
	h.Write(make([]byte, sha256.Size))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCPolicyPCR)))
	h.Write(tpm2.Marshal(sel))
	h.Write(pcrDigest)
	return h.Sum(nil)
}

// createSRK creates the TCG reference ECC P-256 storage root key. A
// primary key is derived from the TPM's storage seed, so it is the same
// key on every boot of the same TPM.
func createSRK(t transport.TPM) (tpm2.NamedHandle, tpm2.TPMTPublic, func(), error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		return tpm2.NamedHandle{}, tpm2.TPMTPublic{}, nil, fmt.Errorf("creating the storage root key: %w", err)
	}
	flush := func() { _, _ = tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(t) }
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush()
		return tpm2.NamedHandle{}, tpm2.TPMTPublic{}, nil, err
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, *pub, flush, nil
}

func pcrPolicy(t transport.TPM, sel tpm2.TPMLPCRSelection, opts ...tpm2.AuthOption) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, opts...)
	if err != nil {
		return nil, fmt.Errorf("policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
		return nil, fmt.Errorf("PolicyPCR: %w", err)
	}
	d, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("PolicyGetDigest: %w", err)
	}
	return d.PolicyDigest.Buffer, nil
}

func selection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	if len(pcrs) == 0 {
		return tpm2.TPMLPCRSelection{}, errors.New("no PCRs to seal to")
	}
	bits := make([]byte, 3)
	for _, p := range pcrs {
		if p < 0 || p > 23 {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range", p)
		}
		bits[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: bits},
	}}, nil
}

// pcrsOf returns the PCRs of a selection of the SHA-256 bank alone.
func pcrsOf(sel tpm2.TPMLPCRSelection) ([]int, error) {
	if len(sel.PCRSelections) != 1 || sel.PCRSelections[0].Hash != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("PCR selection of %d banks, want the SHA-256 bank alone", len(sel.PCRSelections))
	}
	var pcrs []int
	for i, b := range sel.PCRSelections[0].PCRSelect {
		for j := range 8 {
			if b&(1<<j) != 0 {
				pcrs = append(pcrs, i*8+j)
			}
		}
	}
	return pcrs, nil
}

func sortedSet(pcrs []int) []int {
	s := slices.Clone(pcrs)
	slices.Sort(s)
	return slices.Compact(s)
}
