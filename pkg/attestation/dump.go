package attestation

import (
	"encoding/json"
	"fmt"
	"time"
)

// Dump is a full record of one appraisal: the challenge, the node's
// pinned AK and the evidence, with the verdict reached. The verifier
// writes one per appraisal when asked to (evidence_dir); recorded dumps
// from real boots are test data for the pure verifier.
type Dump struct {
	Node     string         `json:"node"`
	Time     time.Time      `json:"time"`
	Nonce    []byte         `json:"nonce"`
	PCRs     []int          `json:"pcrs"`
	AKPublic []byte         `json:"ak_public"`
	Quote    []byte         `json:"quote"`
	Sig      []byte         `json:"signature"`
	Values   map[int][]byte `json:"pcr_values"`
	Firmware []byte         `json:"firmware_log"`
	Runtime  []byte         `json:"runtime_log"`
	Verdict  string         `json:"verdict"`
	Reason   string         `json:"reason,omitempty"`
}

// NewDump records req and its verdict.
func NewDump(node string, at time.Time, req Request, verdict, reason string) *Dump {
	e := req.Evidence
	return &Dump{Node: node, Time: at, Nonce: req.Nonce, PCRs: req.PCRs, AKPublic: req.AKPublic,
		Quote: e.Quote, Sig: e.Signature, Values: e.PCRs, Firmware: e.FirmwareLog, Runtime: e.RuntimeLog,
		Verdict: verdict, Reason: reason}
}

// Request rebuilds the appraisal request (without history or manifests).
func (d *Dump) Request() Request {
	return Request{AKPublic: d.AKPublic, Nonce: d.Nonce, PCRs: d.PCRs, Evidence: Evidence{
		Quote: d.Quote, Signature: d.Sig, PCRs: d.Values, FirmwareLog: d.Firmware, RuntimeLog: d.Runtime,
	}}
}

// ParseDump decodes a dump.
func ParseDump(b []byte) (*Dump, error) {
	var d Dump
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decoding attestation dump: %w", err)
	}
	return &d, nil
}
