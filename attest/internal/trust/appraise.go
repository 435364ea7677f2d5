package trust

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/measure"
)

// Outcome is an appraisal's verdict for the node.
type Outcome struct {
	Node  *store.Node
	Token string
	// Checkpoint is the runtime-log checkpoint a passing appraisal issues
	// (nil otherwise): it goes to the node with the verdict.
	Checkpoint []byte
	// Build is the build whose manifest accepted the boot ("" if none).
	Build string
}

// Appraise records the verdict for evidence ev answering the challenge
// with nonce. passed is told whether the node is trusted before the
// verdict is published (and told false if the verdict could not be
// kept), so a caller who saw the node turn trusted finds its stream
// proven too.
func (k *Keeper) Appraise(ctx context.Context, id string, nonce []byte, ev *apiv1.Evidence, passed func(bool)) (Outcome, error) {
	var checkpoint []byte
	var build string
	n, tok, err := k.updateVerdict(ctx, id, func(n *store.Node, vd *store.Verdict) error {
		defer func() { passed(n.State == Trusted) }()
		pinned := n.FirmwarePCRs
		if n.RepinFirmware {
			pinned = nil
		}
		pcrs := map[int][]byte{}
		for _, p := range ev.GetPcrs() {
			pcrs[int(p.GetIndex())] = p.GetDigest()
		}
		req := attestation.Request{
			AKPublic: n.AKPublic, Nonce: nonce, PCRs: k.o.Policy.PCRs,
			Evidence: attestation.Evidence{
				Quote: ev.GetQuote(), Signature: ev.GetSignature(), PCRs: pcrs,
				FirmwareLog: ev.GetFirmwareEventLog(), RuntimeLog: ev.GetRuntimeEventLog(),
			},
			LastClock: n.LastClock, PinnedFirmware: pinned, Manifests: k.o.Manifests(),
		}
		if k.o.Retired != nil {
			req.Retired, req.RetiredWhy = k.o.Retired()
		}
		req.Checkpoints = n.RuntimeCheckpoints
		r := attestation.Appraise(req)
		defer func() { k.dump(n, req) }()
		vd.Manifest, build = r.Manifest, r.Manifest
		n.Appraisals++
		clockOK := true
		for _, f := range r.Failures {
			clockOK = clockOK && f.Check != attestation.CheckClock
		}
		if r.Quote != nil && clockOK {
			n.LastClock = &r.Quote.Clock
		}
		if err := r.Err(); err != nil {
			n.State, n.Reason = Untrusted, r.Reason()
			if r.Rebooted {
				n.Reason += " (after a reboot)"
			}
			return nil
		}
		// The runtime log replayed: it names every workload started.
		ws, err := measure.Workloads(r.RuntimeEvents)
		if err != nil {
			n.State, n.Reason = Untrusted, string(attestation.CheckRuntimeLog)+": "+err.Error()
			return nil
		}
		for _, w := range ws {
			vd.Workloads = append(vd.Workloads, w.Name())
		}
		gpus, err := gpuDigest(r.RuntimeBase, r.RuntimeEvents)
		if err != nil {
			n.State, n.Reason = Untrusted, string(attestation.CheckRuntimeLog)+": "+err.Error()
			return nil
		}
		defer func() {
			if n.State == Trusted {
				checkpoint = issueCheckpoint(n, r, gpus)
			}
		}()
		if n.GPUDigest != "" && !n.RepinFirmware && gpus != n.GPUDigest {
			n.State, n.Reason = Untrusted, fmt.Sprintf("%s: GPU inventory %s, pinned %s (an operator accepts a change with accept-firmware)",
				attestation.CheckGPUPins, short(gpus), short(n.GPUDigest))
			return nil
		}
		if n.GPUDigest == "" || n.RepinFirmware {
			n.GPUDigest = gpus
		}
		if pinned == nil || r.LegacyPins {
			n.FirmwarePCRs, n.RepinFirmware = r.FirmwarePCRs, false
		}
		switch {
		case n.Revoked:
			n.State = Untrusted // keeps the revocation reason
		case n.Class != attestation.ClassHardware && !k.o.Policy.AllowDev:
			n.State, n.Reason = Untrusted, "ek: dev-class TPM; this verifier trusts hardware-class TPMs only"
		default:
			n.State = Trusted
			n.TrustedUntil = k.o.Now().Add(k.o.Policy.TrustFor)
			n.Reason = "appraisal passed (build " + r.Manifest + ")"
			if r.Rebooted {
				n.Reason += " after a reboot"
			}
			if len(ws) > 0 {
				n.Reason += fmt.Sprintf("; %d workload(s) measured", len(ws))
			}
		}
		return nil
	})
	if err != nil {
		passed(false) // the verdict was not kept
		return Outcome{}, err
	}
	return Outcome{Node: n, Token: tok, Checkpoint: checkpoint, Build: build}, nil
}

// gpuDigest is the GPU inventory digest the runtime log measured last,
// or "none" when it measured none (after base, base's).
func gpuDigest(base *measure.Checkpoint, events []measure.Event) (string, error) {
	inv, err := measure.GPUInventories(events)
	if err != nil {
		return "", err
	}
	switch {
	case len(inv) > 0:
		return inv[len(inv)-1].Digest, nil
	case base != nil && base.GPU != "":
		return base.GPU, nil
	}
	return "none", nil
}

// keptCheckpoints is how many checkpoints a node may start its log with:
// the latest few, so one issued just before the node compacted its log
// still counts when the next challenge crosses it.
const keptCheckpoints = 4

// issueCheckpoint records, for a node whose appraisal r passed, the
// checkpoint standing for the runtime records r covered, and returns its
// data (sent with the verdict).
func issueCheckpoint(n *store.Node, r *attestation.Result, gpus string) []byte {
	count := uint64(len(r.RuntimeEvents))
	if r.RuntimeBase != nil {
		count += r.RuntimeBase.Events
	}
	if count == 0 {
		return nil
	}
	boot := r.Quote.Clock.ResetCount
	cp := measure.Checkpoint{Boot: boot, Events: count,
		PCR: hex.EncodeToString(r.Quote.PCRs[measure.RuntimePCR]), GPU: gpus}.Encode()
	var kept [][]byte // this boot's, older ones first
	for _, c := range n.RuntimeCheckpoints {
		if old, err := measure.DecodeCheckpoint(c); err == nil && old.Boot == boot && !bytes.Equal(c, cp) {
			kept = append(kept, c)
		}
	}
	n.RuntimeCheckpoints = append(kept[max(0, len(kept)-keptCheckpoints+1):], cp)
	return cp
}

func short(d string) string {
	if len(d) > 16 {
		return d[:16] + "…"
	}
	return d
}
