package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/attest/internal/pki"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/internal/sim/softtpm"
	"github.com/rigos/rigos/internal/sim/tpmsim"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/session"
)

// wait is the generous deadline for any event under test (CI may be slow).
const wait = 60 * time.Second

type harness struct {
	t       *testing.T
	v       *Verifier
	db      *store.SQLite
	dbPath  string
	key     ed25519.PrivateKey
	client  apiv1.AttestationClient
	admin   apiv1.AdminClient
	changes chan *apiv1.StateChange
	stop    func()
}

func testPolicy() Policy {
	return Policy{MeanInterval: 20 * time.Millisecond, MinInterval: 5 * time.Millisecond, MaxInterval: 200 * time.Millisecond,
		Deadline: 2 * time.Second, HandshakeTimeout: 10 * time.Second, AllowDev: true}
}

func newHarness(t *testing.T, p Policy, dbPath string) *harness {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "attest.db")
	}
	db, err := store.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	m := []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev")}
	ctx, cancel := context.WithCancel(context.Background())
	v, err := New(ctx, Options{Store: db, Manifests: func() []*attestation.Manifest { return m }, SigningKey: key, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	go v.Run(ctx)

	p2, err := pki.NewTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(p2.ServerCert, p2.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})))
	apiv1.RegisterAttestationServer(srv, v)
	apiv1.RegisterAdminServer(srv, v.Admin())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p2.CACert)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, v: v, db: db, dbPath: dbPath, key: key, client: apiv1.NewAttestationClient(conn),
		admin: apiv1.NewAdminClient(conn), changes: make(chan *apiv1.StateChange, 1024)}
	sub, unsubscribe := v.Subscribe()
	go func() {
		for c := range sub {
			h.changes <- c
		}
	}()
	h.stop = sync.OnceFunc(func() {
		unsubscribe()
		conn.Close()
		srv.Stop()
		cancel()
		db.Close()
	})
	t.Cleanup(h.stop)
	return h
}

// await returns the first change for node satisfying ok.
func (h *harness) await(node string, ok func(*apiv1.StateChange) bool) *apiv1.StateChange {
	h.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case c := <-h.changes:
			if c.GetNodeId() == node && ok(c) {
				return c
			}
		case <-timeout:
			h.t.Fatalf("node %s: no matching state change within %s", node, wait)
			return nil
		}
	}
}

func to(s apiv1.NodeState) func(*apiv1.StateChange) bool {
	return func(c *apiv1.StateChange) bool { return c.GetTo() == s }
}

func bootNode(t *testing.T, seed int64, cfg devboot.Config) *simnode.Node {
	t.Helper()
	if !tpmsim.Available {
		t.Skip("TPM simulator needs cgo")
	}
	n, err := simnode.Start(seed, cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// run starts a session for node and returns a function that ends it and
// returns its error.
func (h *harness) run(id string, n *simnode.Node, hook func(*apiv1.Challenge, *apiv1.Evidence) *apiv1.Evidence) func() error {
	return h.session(session.Node{ID: id, TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, OnChallenge: hook})
}

// session runs node's session until the returned function (or the test's
// cleanup, which comes before the node's TPM is closed) ends it and
// returns its error.
func (h *harness) session(node session.Node) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- session.Run(ctx, h.client, node) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	h.t.Cleanup(func() { stop() })
	return stop
}

func TestEnrolTrustSpotCheckAndToken(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	h.run("rig-1", n, nil)
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	claims, err := attestation.VerifyToken(c.GetToken(), h.key.Public().(ed25519.PublicKey), time.Now())
	if err != nil || claims.State != "trusted" || claims.Subject != "rig-1" || claims.Class != attestation.ClassDev {
		t.Fatalf("token = %+v, %v; want a valid trusted dev token for rig-1", claims, err)
	}
	// Spot checks keep coming at random intervals.
	for i := 0; i < 3; i++ {
		h.await("rig-1", func(c *apiv1.StateChange) bool { return strings.HasPrefix(c.GetReason(), "appraisal passed") })
	}
	// The platform's view: the Watch stream over gRPC.
	w, err := h.admin.Watch(context.Background(), &apiv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := w.Recv(); err != nil || c.GetNodeId() != "rig-1" {
		t.Fatalf("Watch().Recv() = %v, %v; want a change for rig-1", c, err)
	}
	d, err := h.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil || d.GetNode().GetAppraisals() < 4 || !d.GetNode().GetConnected() {
		t.Fatalf("GetNode() = %v, %v; want ≥ 4 appraisals, connected", d, err)
	}
}

func TestTamperedBootIsUntrusted(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	cfg := devboot.Default()
	cfg.Sections = slices.Clone(cfg.Sections)
	cfg.Sections[2].Content = []byte("init=/bin/sh")
	h.run("rig-1", bootNode(t, 1, cfg), nil)
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.HasPrefix(c.GetReason(), string(attestation.CheckBootApp)) {
		t.Fatalf("reason = %q, want %s", c.GetReason(), attestation.CheckBootApp)
	}
}

func TestReplayedAndForeignEvidence(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	var first *apiv1.Evidence
	var mu sync.Mutex
	rounds := 0
	h.run("rig-1", n, func(c *apiv1.Challenge, ev *apiv1.Evidence) *apiv1.Evidence {
		mu.Lock()
		defer mu.Unlock()
		rounds++
		switch rounds {
		case 1:
			first = ev
			return ev
		case 2: // the old evidence, relabelled for the new challenge: a quote for another nonce
			forged := proto.Clone(first).(*apiv1.Evidence)
			forged.ChallengeId = c.GetId()
			return forged
		}
		return first // replay as is
	})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.Contains(c.GetReason(), "another nonce") {
		t.Fatalf("reason = %q, want a nonce mismatch", c.GetReason())
	}
	c = h.await("rig-1", func(c *apiv1.StateChange) bool { return strings.Contains(c.GetReason(), "replayed") })
	if c.GetTo() != apiv1.NodeState_NODE_STATE_UNTRUSTED {
		t.Fatalf("replayed evidence left the node %v", c.GetTo())
	}
}

func TestMissedDeadlineThenLateAnswer(t *testing.T) {
	p := testPolicy()
	p.Deadline = 2 * time.Second // generous: the first round must answer in time even under load
	h := newHarness(t, p, "")
	n := bootNode(t, 1, devboot.Default())
	var mu sync.Mutex
	rounds := 0
	late := make(chan *apiv1.Evidence, 1)
	h.run("rig-1", n, func(c *apiv1.Challenge, ev *apiv1.Evidence) *apiv1.Evidence {
		mu.Lock()
		defer mu.Unlock()
		rounds++
		switch rounds {
		case 1:
			return ev
		case 2:
			late <- ev // withheld: the deadline passes
			return nil
		}
		return <-late // answered much later, for an expired challenge
	})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_SUSPECT))
	if !strings.Contains(c.GetReason(), "missed") {
		t.Fatalf("reason = %q, want a missed deadline", c.GetReason())
	}
	c = h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.Contains(c.GetReason(), "expired") {
		t.Fatalf("reason = %q, want an expired challenge", c.GetReason())
	}
}

func TestIdentityRules(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n1 := bootNode(t, 1, devboot.Default())
	stop := h.run("rig-1", n1, nil)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	stop()

	// The same TPM under another identity.
	err := session.Run(context.Background(), h.client, session.Node{ID: "rig-2", TPM: n1.Att, RuntimeLog: n1.ReadRuntimeLog})
	if !errors.Is(err, session.ErrRefused) || !strings.Contains(err.Error(), "already enrolled as node rig-1") {
		t.Fatalf("same EK as rig-2: %v, want refused as already enrolled", err)
	}
	n1.Close()

	// A known node returning with a different TPM.
	n2 := bootNode(t, 2, devboot.Default())
	err = session.Run(context.Background(), h.client, session.Node{ID: "rig-1", TPM: n2.Att, RuntimeLog: n2.ReadRuntimeLog})
	if !errors.Is(err, session.ErrRefused) || !strings.Contains(err.Error(), "different TPM") {
		t.Fatalf("rig-1 with another TPM: %v, want refused", err)
	}
	// The enrolled node is not demoted (a software TPM could prove itself
	// just as well); the conflict is in its history for an operator.
	d, err := h.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil || d.GetNode().GetState() == apiv1.NodeState_NODE_STATE_UNTRUSTED {
		t.Fatalf("rig-1 after another TPM claimed it: %v, %v; want it left as it was", d.GetNode(), err)
	}
	if !slices.ContainsFunc(d.GetHistory(), func(v *apiv1.VerdictRecord) bool { return strings.HasPrefix(v.GetReason(), "ek-conflict") }) {
		t.Errorf("rig-1's history has no ek-conflict record: %v", d.GetHistory())
	}
}

func TestGarbageOnTheStream(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	for name, msg := range map[string]*apiv1.AgentMessage{
		"evidence first": {Msg: &apiv1.AgentMessage_Evidence{Evidence: &apiv1.Evidence{Quote: []byte("x")}}},
		"bad node id":    {Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{NodeId: "../../etc"}}},
		"junk EK":        {Msg: &apiv1.AgentMessage_Hello{Hello: &apiv1.Hello{NodeId: "rig-x", EkPublic: []byte("junk")}}},
		"empty":          {},
	} {
		s, err := h.client.Session(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(msg); err != nil {
			t.Fatal(err)
		}
		m, err := s.Recv()
		if err != nil || m.GetRefusal() == nil {
			t.Errorf("%s: got %v, %v; want a refusal", name, m, err)
		}
	}
}

func TestDevTPMNotTrustedWhenDisallowed(t *testing.T) {
	p := testPolicy()
	p.AllowDev = false
	h := newHarness(t, p, "")
	h.run("rig-1", bootNode(t, 1, devboot.Default()), nil)
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.Contains(c.GetReason(), "dev-class") {
		t.Fatalf("reason = %q, want dev-class refusal", c.GetReason())
	}
}

func TestRestartDemotesUntilRecheck(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	stop := h.run("rig-1", n, nil)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	stop()
	h.stop()

	h2 := newHarness(t, testPolicy(), h.dbPath)
	d, err := h2.admin.GetNode(context.Background(), &apiv1.GetNodeRequest{NodeId: "rig-1", History: 100})
	if err != nil {
		t.Fatal(err)
	}
	if st := d.GetNode().GetState(); st == apiv1.NodeState_NODE_STATE_TRUSTED {
		t.Fatalf("after restart rig-1 is %v, want not trusted until re-checked", st)
	}
	if len(d.GetHistory()) < 3 {
		t.Fatalf("history after restart has %d verdicts, want the earlier ones kept", len(d.GetHistory()))
	}
	h2.run("rig-1", n, nil)
	h2.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
}

func TestRevoke(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	h.run("rig-1", bootNode(t, 1, devboot.Default()), nil)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	if _, err := h.admin.Revoke(context.Background(), &apiv1.RevokeRequest{NodeId: "rig-1", Reason: "fraud report"}); err != nil {
		t.Fatal(err)
	}
	// Later passing appraisals do not restore trust.
	for i := 0; i < 3; i++ {
		c := h.await("rig-1", func(*apiv1.StateChange) bool { return true })
		if c.GetTo() == apiv1.NodeState_NODE_STATE_TRUSTED {
			t.Fatalf("revoked node became trusted: %v", c)
		}
	}
}

func TestIntervalsAreRandomAndClamped(t *testing.T) {
	p := Policy{MeanInterval: time.Minute, MinInterval: 10 * time.Second, MaxInterval: 5 * time.Minute}
	v := &Verifier{o: Options{Policy: p}}
	v.rng = newRand()
	seen := map[time.Duration]bool{}
	var sum time.Duration
	const n = 20000
	for i := 0; i < n; i++ {
		d := v.NextInterval()
		if d < p.MinInterval || d > p.MaxInterval {
			t.Fatalf("NextInterval() = %v outside [%v, %v]", d, p.MinInterval, p.MaxInterval)
		}
		seen[d] = true
		sum += d
	}
	mean := sum / n
	if len(seen) < n/2 || mean < 50*time.Second || mean > 75*time.Second {
		t.Fatalf("%d distinct intervals, mean %v; want varied intervals with a mean near the 1m target", len(seen), mean)
	}
}

// A firmware update (a reboot into new firmware) on the same TPM needs an
// operator. The go-tpm-tools simulator changes its EK on reset, so this
// uses the software TPM, which keeps its keys across a reboot as a real
// TPM does, through the same verifier path.
func TestFirmwareChangeNeedsOperator(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	s, err := softtpm.New(devboot.Default())
	if err != nil {
		t.Fatal(err)
	}
	runSoft := func() func() error {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- session.Run(ctx, h.client, session.Node{ID: "rig-1", TPM: s}) }()
		stop := sync.OnceValue(func() error { cancel(); return <-errc })
		t.Cleanup(func() { stop() })
		return stop
	}
	stop := runSoft()
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	stop()

	cfg := devboot.Default()
	cfg.Firmware = "vendor BIOS 2.0"
	s.Reboot(cfg)
	runSoft()
	c := h.await("rig-1", to(apiv1.NodeState_NODE_STATE_UNTRUSTED))
	if !strings.HasPrefix(c.GetReason(), string(attestation.CheckFirmwarePins)) || !strings.Contains(c.GetReason(), "after a reboot") {
		t.Fatalf("reason = %q, want %s after a reboot", c.GetReason(), attestation.CheckFirmwarePins)
	}
	if _, err := h.admin.AcceptFirmware(context.Background(), &apiv1.NodeRequest{NodeId: "rig-1"}); err != nil {
		t.Fatal(err)
	}
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
}
