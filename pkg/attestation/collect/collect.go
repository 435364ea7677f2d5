// Package collect is the agent's half of RigOS remote attestation: it
// drives the TPM (through go-attestation) to create and activate the
// attestation key and to gather evidence for a challenge. Everything it
// produces is appraised by package attestation on the verifier.
package collect

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-attestation/attest"

	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/tpm"
)

// Attestor holds the TPM, its EK and the node's AK. It is safe for
// concurrent use; TPM commands are serialised.
type Attestor struct {
	mu  sync.Mutex
	dev tpm.Device
	tpm *attest.TPM
	ek  attest.EK
	ak  *attest.AK
}

// Open uses dev for attestation. If akBlob (from AKBlob) is non-empty the
// AK is loaded from it, otherwise a new AK is created in the TPM.
func Open(dev tpm.Device, akBlob []byte) (*Attestor, error) {
	t, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: dev})
	if err != nil {
		return nil, fmt.Errorf("opening TPM: %w", err)
	}
	a := &Attestor{dev: dev, tpm: t}
	eks, err := t.EKs()
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("reading endorsement key: %w", err)
	}
	if len(eks) == 0 {
		t.Close()
		return nil, errors.New("TPM has no endorsement key")
	}
	a.ek = eks[0]
	if len(akBlob) > 0 {
		a.ak, err = t.LoadAK(akBlob)
		if err != nil {
			err = fmt.Errorf("loading attestation key: %w", err)
		}
	} else {
		a.ak, err = t.NewAK(&attest.AKConfig{})
		if err != nil {
			err = fmt.Errorf("creating attestation key: %w", err)
		}
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return a, nil
}

// Close releases the AK handle and the TPM.
func (a *Attestor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return errors.Join(a.ak.Close(a.tpm), a.tpm.Close())
}

// EKPublic returns the EK public key (PKIX DER).
func (a *Attestor) EKPublic() ([]byte, error) {
	return x509.MarshalPKIXPublicKey(a.ek.Public)
}

// EKCertificate returns the EK certificate (DER), or nil if the TPM has
// none.
func (a *Attestor) EKCertificate() []byte {
	if a.ek.Certificate == nil {
		return nil
	}
	return a.ek.Certificate.Raw
}

// AKParams returns the AK public area and creation proof.
func (a *Attestor) AKParams() attestation.AKParams {
	p := a.ak.AttestationParameters()
	return attestation.AKParams{
		Public: p.Public, CreateData: p.CreateData,
		CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature,
	}
}

// AKBlob returns the AK in the TPM-wrapped form Open accepts. It is only
// usable in this TPM and safe to store on disk.
func (a *Attestor) AKBlob() ([]byte, error) { return a.ak.Marshal() }

// Activate recovers the verifier's secret with TPM2_ActivateCredential.
func (a *Attestor) Activate(c attestation.Credential) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.ak.ActivateCredentialWithEK(a.tpm, attest.EncryptedCredential{Credential: c.Blob, Secret: c.Secret}, a.ek)
	if err != nil {
		return nil, fmt.Errorf("activating credential: %w", err)
	}
	return s, nil
}

// Extend extends a SHA-256 digest into a PCR (for measure.Recorder).
func (a *Attestor) Extend(pcr int, digest []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return tpm.Extend(a.dev, pcr, digest)
}

// Collect quotes pcrs with nonce and gathers the PCR values, the firmware
// event log and runtimeLog. Reading PCRs and quoting are separate TPM
// commands, so a PCR extended in between is detected and the collection
// retried.
func (a *Attestor) Collect(nonce []byte, pcrs []int, runtimeLog func() ([]byte, error)) (attestation.Evidence, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.dev.MeasurementLog()
	if err != nil {
		return attestation.Evidence{}, err
	}
	for try := 0; try < 5; try++ {
		rt, err := runtimeLog()
		if err != nil {
			return attestation.Evidence{}, fmt.Errorf("reading runtime log: %w", err)
		}
		before, err := a.readPCRs(pcrs)
		if err != nil {
			return attestation.Evidence{}, err
		}
		q, err := a.ak.QuotePCRs(a.tpm, nonce, attest.HashSHA256, pcrs)
		if err != nil {
			return attestation.Evidence{}, fmt.Errorf("quoting: %w", err)
		}
		after, err := a.readPCRs(pcrs)
		if err != nil {
			return attestation.Evidence{}, err
		}
		if !samePCRs(before, after) {
			continue
		}
		return attestation.Evidence{
			Quote: q.Quote, Signature: q.Signature, PCRs: after,
			FirmwareLog: fw, RuntimeLog: rt,
		}, nil
	}
	return attestation.Evidence{}, errors.New("PCRs kept changing while quoting")
}

func (a *Attestor) readPCRs(want []int) (map[int][]byte, error) {
	all, err := a.tpm.PCRs(attest.HashSHA256)
	if err != nil {
		return nil, fmt.Errorf("reading PCRs: %w", err)
	}
	out := map[int][]byte{}
	for _, p := range all {
		if slices.Contains(want, p.Index) {
			out[p.Index] = p.Digest
		}
	}
	return out, nil
}

func samePCRs(a, b map[int][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i, v := range a {
		if !bytes.Equal(v, b[i]) {
			return false
		}
	}
	return true
}
