// Package softtpm is a software TPM for load generation: it speaks the
// same structures a TPM 2.0 does (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE,
// TPM2_ActivateCredential's ID object) with ECC P-256 keys held in
// memory, so many simulated nodes can drive the real verifier through its
// full appraisal path. Its EK has no certificate, so the verifier can
// only ever place it in the dev trust class. Never use it on a rig.
package softtpm

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/measure"
)

// TPM is one software TPM after a simulated boot.
type TPM struct {
	mu     sync.Mutex
	ek     *ecdh.PrivateKey
	ak     *ecdsa.PrivateKey
	akPub  []byte
	akName []byte
	params attestation.AKParams
	pcrs   map[int][]byte
	fwLog  []byte
	rtLog  []byte
	clock  uint64
	resets uint32
}

// New creates a TPM that booted with cfg and recorded the standard boot
// phases.
func New(cfg devboot.Config) (*TPM, error) {
	ek, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	t := &TPM{ek: ek, ak: ak, clock: 1000, resets: 1}
	t.measureBoot(cfg)
	if err := t.makeAK(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reboot resets the PCRs and boots again with cfg, as a reboot does: the
// keys and the clock survive, resetCount goes up.
func (t *TPM) Reboot(cfg devboot.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resets++
	t.measureBoot(cfg)
}

func (t *TPM) measureBoot(cfg devboot.Config) {
	t.pcrs, t.rtLog = map[int][]byte{}, nil
	boot := devboot.Simulate(cfg)
	t.fwLog = boot.Log.Bytes()
	for i := 0; i < 24; i++ {
		t.pcrs[i] = boot.Log.PCR(i)
	}
	var events []measure.Event
	for i, p := range measure.BootPhases {
		e := measure.NewEvent(uint64(i), measure.KindPhase, []byte(p))
		events = append(events, e)
		t.rtLog = append(t.rtLog, e.Encode()...)
	}
	t.pcrs[measure.RuntimePCR] = measure.Replay(events)
}

func (t *TPM) makeAK() error {
	b := t.ak.PublicKey.X.FillBytes(make([]byte, 32))
	c := t.ak.PublicKey.Y.FillBytes(make([]byte, 32))
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA,
				&tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: b}, Y: tpm2.TPM2BECCParameter{Buffer: c}}),
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return err
	}
	t.akPub, t.akName = tpm2.Marshal(pub), name.Buffer
	cd := tpm2.Marshal(tpm2.TPMSCreationData{
		PCRSelect: tpm2.TPMLPCRSelection{}, ParentNameAlg: tpm2.TPMAlgSHA256,
		ParentName: tpm2.TPM2BName{Buffer: binary.BigEndian.AppendUint32(nil, 0x81000001)},
	})
	h := sha256.Sum256(cd)
	att := tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCreation,
		QualifiedSigner: tpm2.TPM2BName{Buffer: name.Buffer},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: t.clock, Safe: true},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCreation, &tpm2.TPMSCreationInfo{
			ObjectName: tpm2.TPM2BName{Buffer: name.Buffer}, CreationHash: tpm2.TPM2BDigest{Buffer: h[:]},
		}),
	})
	sig, err := t.sign(att)
	if err != nil {
		return err
	}
	t.params = attestation.AKParams{Public: t.akPub, CreateData: cd, CreateAttestation: att, CreateSignature: sig}
	return nil
}

func (t *TPM) sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, t.ak, d[:])
	if err != nil {
		return nil, err
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash:       tpm2.TPMAlgSHA256,
		SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
		SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
	})}), nil
}

// EKPublic implements session.TPM.
func (t *TPM) EKPublic() ([]byte, error) {
	pub, err := ecdsaPub(t.ek.PublicKey())
	if err != nil {
		return nil, err
	}
	return x509.MarshalPKIXPublicKey(pub)
}

func ecdsaPub(k *ecdh.PublicKey) (*ecdsa.PublicKey, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	p, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	return p.(*ecdsa.PublicKey), nil
}

// EKCertificate implements session.TPM: a software TPM has none.
func (t *TPM) EKCertificate() []byte { return nil }

// AKParams implements session.TPM.
func (t *TPM) AKParams() attestation.AKParams { return t.params }

// Activate implements TPM2_ActivateCredential for an ECC EK (TPM 2.0
// Part 1, sections 24 and C.6.4).
func (t *TPM) Activate(c attestation.Credential) ([]byte, error) {
	r := bytes.NewReader(c.Secret)
	outer, err := u16(r)
	if err != nil {
		return nil, fmt.Errorf("encrypted secret: %w", err)
	}
	pr := bytes.NewReader(outer)
	x, err1 := u16(pr)
	y, err2 := u16(pr)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("ephemeral point: %w", err)
	}
	eph, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, err
	}
	z, err := t.ek.ECDH(eph)
	if err != nil {
		return nil, err
	}
	ekX := t.ek.PublicKey().Bytes()[1:33]
	seed := tpm2.KDFe(crypto.SHA256, z, "IDENTITY", x, ekX, 256)

	br := bytes.NewReader(c.Blob)
	id, err := u16(br)
	if err != nil {
		return nil, fmt.Errorf("credential blob: %w", err)
	}
	ir := bytes.NewReader(id)
	mac, err := u16(ir)
	if err != nil {
		return nil, fmt.Errorf("integrity HMAC: %w", err)
	}
	enc := make([]byte, ir.Len())
	_, _ = ir.Read(enc)
	hk := tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256)
	h := hmac.New(sha256.New, hk)
	h.Write(enc)
	h.Write(t.akName)
	if !hmac.Equal(h.Sum(nil), mac) {
		return nil, errors.New("credential integrity check failed: not for this EK and AK")
	}
	key := tpm2.KDFa(crypto.SHA256, seed, "STORAGE", t.akName, nil, 128)
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	cv := make([]byte, len(enc))
	cipher.NewCFBDecrypter(blk, make([]byte, 16)).XORKeyStream(cv, enc)
	return u16(bytes.NewReader(cv))
}

func u16(r *bytes.Reader) ([]byte, error) {
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	if int(n) > r.Len() {
		return nil, fmt.Errorf("size %d beyond the %d bytes left", n, r.Len())
	}
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b, nil
}

// Collect implements session.TPM: a quote over pcrs signed by the AK.
func (t *TPM) Collect(nonce []byte, pcrs []int, _ func() ([]byte, error)) (attestation.Evidence, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.clock += 1000
	sel := slices.Clone(pcrs)
	slices.Sort(sel)
	bitmap := make([]byte, 3)
	h := sha256.New()
	vals := map[int][]byte{}
	for _, p := range sel {
		bitmap[p/8] |= 1 << (p % 8)
		h.Write(t.pcrs[p])
		vals[p] = t.pcrs[p]
	}
	q := tpm2.Marshal(tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: t.akName},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: t.clock, ResetCount: t.resets, Safe: true},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: bitmap}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	})
	sig, err := t.sign(q)
	if err != nil {
		return attestation.Evidence{}, err
	}
	return attestation.Evidence{Quote: q, Signature: sig, PCRs: vals, FirmwareLog: t.fwLog, RuntimeLog: t.rtLog}, nil
}
