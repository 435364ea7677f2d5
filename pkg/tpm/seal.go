package tpm

import (
	"bytes"
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
type Sealed struct {
	PCRs    []int  `json:"pcrs"`
	Policy  []byte `json:"policy"`
	Public  []byte `json:"public"`
	Private []byte `json:"private"`
	SRKName []byte `json:"srk_name"`
}

// ErrPolicy means the PCRs no longer hold the values the secret was
// sealed to: another boot chain, Secure Boot state, or a later boot phase.
var ErrPolicy = errors.New("PCR values differ from those the secret was sealed to")

// MaxSealedSecret bounds a sealed secret (a TPM2B_SENSITIVE_DATA).
const MaxSealedSecret = 128

// Seal seals secret to the current values of pcrs (SHA-256 bank). The
// secret travels to the TPM encrypted (an AES-CFB parameter-encryption
// session salted with the storage root key), so it is never on the TPM
// bus in the clear.
func Seal(rw io.ReadWriter, secret []byte, pcrs []int) (*Sealed, error) {
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

	policy, err := pcrPolicy(t, sel, tpm2.Trial())
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
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			// No UserWithAuth: the policy is the only way to use it.
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash,
				&tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		}),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return &Sealed{
		PCRs: slices.Clone(pcrs), Policy: policy,
		Public: tpm2.Marshal(rsp.OutPublic), Private: tpm2.Marshal(rsp.OutPrivate),
		SRKName: tpm2.Marshal(srk.Name),
	}, nil
}

// Unseal returns the secret if the PCRs hold the values it was sealed
// to; otherwise the error wraps ErrPolicy. The secret comes back
// encrypted on the bus.
func Unseal(rw io.ReadWriter, s *Sealed) ([]byte, error) {
	t := transport.FromReadWriter(rw)
	sel, err := selection(s.PCRs)
	if err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return nil, fmt.Errorf("unsealing: public part: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	if err != nil {
		return nil, fmt.Errorf("unsealing: private part: %w", err)
	}
	srk, srkPub, flush, err := createSRK(t)
	if err != nil {
		return nil, err
	}
	defer flush()
	if got := tpm2.Marshal(srk.Name); !bytes.Equal(got, s.SRKName) {
		return nil, errors.New("unsealing: this TPM's storage root key is not the one the secret was sealed under (another TPM, or the TPM was cleared)")
	}
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("unsealing: loading the sealed object: %w", err)
	}
	defer func() { _, _ = tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(t) }()

	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.Handle, srkPub))
	if err != nil {
		return nil, fmt.Errorf("unsealing: policy session: %w", err)
	}
	defer func() { _ = closeSess() }()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
		return nil, fmt.Errorf("unsealing: PolicyPCR: %w", err)
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
