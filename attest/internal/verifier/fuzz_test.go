package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/softtpm"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

// fakeStream is the server side of one session, in memory.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*apiv1.VerifierMessage
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) Send(m *apiv1.VerifierMessage) error {
	f.sent = append(f.sent, m)
	return nil
}
func (f *fakeStream) Recv() (*apiv1.AgentMessage, error) { panic("enrol reads through its inbox") }

// FuzzEnrol drives the handshake with arbitrary messages: a hello (or
// anything) and an answer to the activation challenge. Whatever comes,
// the handshake never panics, never succeeds without the TPM (no fuzz
// input holds the encrypted secret), and keeps nothing: no node is
// stored and no plan or hardware inventory remembered.
func FuzzEnrol(f *testing.F) {
	soft, err := softtpm.New(devboot.Default())
	if err != nil {
		f.Fatal(err)
	}
	ek, _ := soft.EKPublic()
	ak := soft.AKParams()
	hello, _ := proto.Marshal(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{
		NodeId: "rig-1", EkPublic: ek, AskPlan: `{"version":1}`,
		Ak: &apiv1.AKParameters{Public: ak.Public, CreateData: ak.CreateData, CreateAttestation: ak.CreateAttestation, CreateSignature: ak.CreateSignature},
	}}})
	withHardware, _ := proto.Marshal(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{
		NodeId: "rig-1", EkPublic: ek,
		Ak:       &apiv1.AKParameters{Public: ak.Public, CreateData: ak.CreateData, CreateAttestation: ak.CreateAttestation, CreateSignature: ak.CreateSignature},
		Hardware: &apiv1.HardwareInventory{System: &apiv1.HardwareIdentity{Product: "PowerEdge R630"}, Processors: []*apiv1.HardwareProcessor{{Model: "Xeon", Cores: 8}}},
	}}})
	answer, _ := proto.Marshal(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_Activation{Activation: &apiv1.ActivationProof{Secret: make([]byte, 32)}}})
	f.Add(hello, answer)
	f.Add(hello, []byte{})
	f.Add(withHardware, answer)
	f.Add([]byte{0x0a, 0x00}, answer)

	db, err := store.OpenSQLite(filepath.Join(f.TempDir(), "attest.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	p := testPolicy()
	p.HandshakeTimeout = time.Second
	p.EnrolBurst = 1 << 30
	v, err := New(context.Background(), Options{Store: db, SigningKey: key, Policy: p,
		Manifests: func() []*attestation.Manifest { return nil }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var m1, m2 apiv1.AgentMessage
		if proto.Unmarshal(first, &m1) != nil || proto.Unmarshal(second, &m2) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		recv := make(chan *apiv1.AgentMessage, 2)
		recv <- &m1
		recv <- &m2
		s := &fakeStream{ctx: ctx}
		n, _, err := v.enrol(ctx, s, &inbox{ctx: ctx, recv: recv, errc: make(chan error)})
		if err == nil {
			t.Fatalf("enrol() accepted %v without the TPM: node %+v", m1.String(), n)
		}
		if nodes, _ := db.ListNodes(ctx); len(nodes) != 0 {
			t.Fatalf("enrol() stored %d nodes before any proof", len(nodes))
		}
		if p := v.hub.Plan(m1.GetHello().GetNodeId()); p != (hub.Plan{}) {
			t.Fatalf("enrol() remembered a plan before any proof: %v", p)
		}
	})
}
