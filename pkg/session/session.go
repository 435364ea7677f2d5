// Package session is the agent's side of the RigOS session: it dials the
// verifier, enrols the node (proving its AK with credential activation)
// and answers challenges with evidence from the TPM, for as long as the
// stream stays open.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/hwinfo"
)

// TPM is what a session needs from the node's TPM. collect.Attestor is
// the real one.
type TPM interface {
	EKPublic() ([]byte, error)
	EKCertificate() []byte
	AKParams() attestation.AKParams
	Activate(attestation.Credential) ([]byte, error)
	Collect(nonce []byte, pcrs []int, runtimeLog func() ([]byte, error)) (attestation.Evidence, error)
}

// Node describes the rig for one session.
type Node struct {
	ID         string
	Version    string
	TPM        TPM
	RuntimeLog func() ([]byte, error)
	Logger     *slog.Logger
	// OnVerdict, if set, is called with every verdict.
	OnVerdict func(*apiv1.Verdict)
	// AskPlan and AskPlanError describe the supplier's ASK plan for the
	// verifier (see apiv1.Hello).
	AskPlan, AskPlanError string
	// Hardware, if set, is the node's SMBIOS inventory, sent in the hello
	// (fitted to the hello's limits) as the node's own, unattested claim.
	Hardware *hwinfo.Inventory
	// Outbox, if set, carries the node's own messages (workload events
	// and output, GPU reports): it is attached to the stream while the
	// node is enrolled.
	Outbox *Outbox
	// Workloads, if set, receives the verifier's workload messages; it
	// answers through the Outbox. Without it a workload is refused.
	Workloads Workloads
	// Install, if set, receives the verifier's install requests and
	// answers through the Outbox; without it an install is refused.
	Install func(*apiv1.Install)
	// Update and UpdateChunk, if set, receive the verifier's update
	// requests and their data and answer through the Outbox; without
	// them an update is refused.
	Update      func(*apiv1.Update)
	UpdateChunk func(*apiv1.UpdateChunk)
	// End, when closed, ends the session cleanly: the stream is closed
	// after everything sent so far (the node is about to reboot), and
	// Run returns ErrEnded once the verifier has closed its side.
	End <-chan struct{}
	// OnChallenge, if set, may replace or drop evidence (tests only
	// simulate misbehaving agents with it); return nil to not answer.
	OnChallenge func(*apiv1.Challenge, *apiv1.Evidence) *apiv1.Evidence
}

// Workloads handles the workload part of a session.
type Workloads interface {
	// Handle receives StartWorkload, ImageChunk and StopWorkload.
	Handle(*apiv1.VerifierMessage)
}

// ErrEnded is returned by Run after Node.End closed the session.
var ErrEnded = errors.New("session ended by the node")

// ErrRefused is wrapped when the verifier refuses the node.
var ErrRefused = errors.New("verifier refused the node")

// Run holds one session on client until it ends. It returns nil when the
// verifier closes the stream cleanly.
func Run(ctx context.Context, client apiv1.AttestationClient, n Node) (err error) {
	log := n.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ek, err := n.TPM.EKPublic()
	if err != nil {
		return err
	}
	stream, err := client.Session(ctx)
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	// sendMu orders every use of the stream's sending side: messages
	// from the Outbox's goroutines, End's close, and the close at return.
	var sendMu sync.Mutex
	defer func() {
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.CloseSend()
	}()
	send := func(m *apiv1.AgentMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	if n.Outbox != nil {
		defer n.Outbox.Attach(nil)
	}
	var ended atomic.Bool
	defer func() {
		if ended.Load() && err != nil { // whatever failed after End closed the stream
			err = ErrEnded
		}
	}()
	if n.End != nil {
		go func() {
			select {
			case <-n.End:
				sendMu.Lock()
				defer sendMu.Unlock()
				ended.Store(true)
				_ = stream.CloseSend() // after what was sent; later sends fail
			case <-stream.Context().Done():
			}
		}()
	}
	ak := n.TPM.AKParams()
	if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{
		NodeId: n.ID, EkPublic: ek, EkCertificate: n.TPM.EKCertificate(), AgentVersion: n.Version,
		AskPlan: n.AskPlan, AskPlanError: n.AskPlanError, Hardware: hardwareProto(n.Hardware),
		Ak: &apiv1.AKParameters{Public: ak.Public, CreateData: ak.CreateData, CreateAttestation: ak.CreateAttestation, CreateSignature: ak.CreateSignature},
	}}}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	for {
		m, err := stream.Recv()
		if ended.Load() && err != nil {
			return ErrEnded
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		switch msg := m.Msg.(type) {
		case *apiv1.VerifierMessage_Refusal:
			return fmt.Errorf("%w: %s", ErrRefused, msg.Refusal.GetReason())
		case *apiv1.VerifierMessage_Activation:
			secret, err := n.TPM.Activate(attestation.Credential{Blob: msg.Activation.GetCredential(), Secret: msg.Activation.GetSecret()})
			if err != nil {
				log.Error("credential activation failed", "err", err)
				secret = nil // the verifier names the failure
			}
			if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Activation{Activation: &apiv1.ActivationProof{Secret: secret}}}); err != nil {
				return err
			}
		case *apiv1.VerifierMessage_Enrolled:
			log.Info("enrolled", "node", msg.Enrolled.GetNodeId(), "class", msg.Enrolled.GetTrustClass())
			if n.Outbox != nil {
				n.Outbox.Attach(send)
			}
		case *apiv1.VerifierMessage_Challenge:
			ev, err := answer(n, msg.Challenge)
			if err != nil {
				log.Error("collecting evidence", "challenge", msg.Challenge.GetId(), "err", err)
				continue // the verifier sees a missed deadline
			}
			if n.OnChallenge != nil {
				if ev = n.OnChallenge(msg.Challenge, ev); ev == nil {
					continue
				}
			}
			if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Evidence{Evidence: ev}}); err != nil {
				return err
			}
		case *apiv1.VerifierMessage_Verdict:
			log.Info("verdict", "challenge", msg.Verdict.GetChallengeId(), "state", msg.Verdict.GetState(), "reason", msg.Verdict.GetReason())
			if n.OnVerdict != nil {
				n.OnVerdict(msg.Verdict)
			}
		case *apiv1.VerifierMessage_Install:
			if n.Install == nil {
				if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_InstallEvent{InstallEvent: &apiv1.InstallEvent{
					State: apiv1.InstallState_INSTALL_STATE_FAILED, Disk: msg.Install.GetDisk(),
					Reason: "this agent does not install: it is not running from a RigOS disk",
				}}}); err != nil {
					return err
				}
				continue
			}
			n.Install(msg.Install)
		case *apiv1.VerifierMessage_Update:
			if n.Update == nil {
				if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: &apiv1.UpdateEvent{
					State: apiv1.UpdateState_UPDATE_STATE_FAILED, Build: msg.Update.GetBuild(), RequestId: msg.Update.GetRequestId(),
					Reason: "this agent does not update: it is not running from a RigOS disk",
				}}}); err != nil {
					return err
				}
				continue
			}
			n.Update(msg.Update)
		case *apiv1.VerifierMessage_UpdateChunk:
			if n.UpdateChunk != nil {
				n.UpdateChunk(msg.UpdateChunk)
			}
		case *apiv1.VerifierMessage_StartWorkload, *apiv1.VerifierMessage_ImageChunk, *apiv1.VerifierMessage_StopWorkload:
			if n.Workloads == nil {
				id := m.GetStartWorkload().GetSpec().GetId()
				if id == "" {
					continue
				}
				if err := send(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_WorkloadEvent{WorkloadEvent: &apiv1.WorkloadEvent{
					Id: id, State: apiv1.WorkloadState_WORKLOAD_STATE_FAILED, Reason: "this node runs no workloads",
				}}}); err != nil {
					return err
				}
				continue
			}
			n.Workloads.Handle(m)
		}
	}
}

func answer(n Node, c *apiv1.Challenge) (*apiv1.Evidence, error) {
	pcrs := make([]int, len(c.GetPcrs()))
	for i, p := range c.GetPcrs() {
		if p > 23 {
			return nil, fmt.Errorf("challenge asks for PCR %d", p)
		}
		pcrs[i] = int(p)
	}
	rt := n.RuntimeLog
	if rt == nil {
		rt = func() ([]byte, error) { return nil, nil }
	}
	ev, err := n.TPM.Collect(c.GetNonce(), pcrs, rt)
	if err != nil {
		return nil, err
	}
	out := &apiv1.Evidence{
		ChallengeId: c.GetId(), Quote: ev.Quote, Signature: ev.Signature,
		FirmwareEventLog: ev.FirmwareLog, RuntimeEventLog: ev.RuntimeLog,
	}
	for _, p := range pcrs {
		out.Pcrs = append(out.Pcrs, &apiv1.PCRValue{Index: uint32(p), Digest: ev.PCRs[p]})
	}
	return out, nil
}
