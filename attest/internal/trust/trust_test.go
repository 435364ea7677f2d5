package trust

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/internal/sim/tpmsim"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

// keeper is a Keeper on a fresh SQLite store with a settable clock, and
// what it published and told nodes.
type keeper struct {
	*Keeper
	db  *store.SQLite
	pub ed25519.PublicKey

	mu       sync.Mutex
	now      time.Time
	changes  []*apiv1.StateChange
	notified []*apiv1.Verdict
	// passedAtPublish is whether the passed callback had said true when
	// a change to trusted was published.
	passed, passedAtPublish bool
}

func newKeeper(t *testing.T, dbPath string) *keeper {
	t.Helper()
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "attest.db")
	}
	db, err := store.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	k := &keeper{db: db, pub: pub, now: time.Unix(1_800_000_000, 0)}
	m := []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev")}
	k.Keeper, err = New(context.Background(), Options{
		Store: db, Manifests: func() []*attestation.Manifest { return m }, SigningKey: key,
		Policy: Policy{AllowDev: true, TrustFor: time.Minute},
		Now: func() time.Time {
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.now
		},
		Publish: func(c *apiv1.StateChange) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.changes = append(k.changes, c)
			if c.GetTo() == Trusted {
				k.passedAtPublish = k.passed
			}
		},
		Notify: func(_ string, v *apiv1.Verdict) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.notified = append(k.notified, v)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *keeper) setPassed(ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.passed = ok
}

func (k *keeper) advance(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.now = k.now.Add(d)
}

// enrolSim boots the simulated node and enrols it.
func enrolSim(t *testing.T, k *keeper) *simnode.Node {
	t.Helper()
	if !tpmsim.Available {
		t.Skip("TPM simulator needs cgo")
	}
	n, err := simnode.Start(1, devboot.Default(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	der, err := n.Att.EKPublic()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := attestation.AppraiseEK(der, nil, nil, nil, k.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Enrol(context.Background(), "rig-1", ek, n.Att.AKParams().Public); err != nil {
		t.Fatal(err)
	}
	return n
}

// evidence is the node's answer to nonce.
func evidence(t *testing.T, n *simnode.Node, nonce []byte) *apiv1.Evidence {
	t.Helper()
	ev, err := n.Att.Collect(nonce, attestation.DefaultPCRs, n.ReadRuntimeLog)
	if err != nil {
		t.Fatal(err)
	}
	out := &apiv1.Evidence{Quote: ev.Quote, Signature: ev.Signature, FirmwareEventLog: ev.FirmwareLog, RuntimeEventLog: ev.RuntimeLog}
	for _, p := range attestation.DefaultPCRs {
		out.Pcrs = append(out.Pcrs, &apiv1.PCRValue{Index: uint32(p), Digest: ev.PCRs[p]})
	}
	return out
}

// A passing appraisal makes the node trusted for TrustFor, signs a token
// saying so, and tells the stream it passed before anyone hears of it.
func TestAppraisePasses(t *testing.T) {
	k := newKeeper(t, "")
	n := enrolSim(t, k)
	nonce := []byte("a fresh nonce, thirty-two bytes!")
	out, err := k.Appraise(context.Background(), "rig-1", nonce, evidence(t, n, nonce), k.setPassed)
	if err != nil {
		t.Fatal(err)
	}
	if out.Node.State != Trusted || !out.Node.TrustedUntil.Equal(k.Now().Add(time.Minute)) {
		t.Fatalf("after a pass: %v until %v (%s); want trusted until now+1m", out.Node.State, out.Node.TrustedUntil, out.Node.Reason)
	}
	if !k.Trusted(out.Node) {
		t.Error("Trusted() false right after a pass")
	}
	claims, err := attestation.VerifyToken(out.Token, k.pub, k.Now())
	if err != nil || claims.State != "trusted" || claims.Build != "dev" || claims.Subject != "rig-1" {
		t.Errorf("token: %+v, %v", claims, err)
	}
	if !k.passedAtPublish {
		t.Error("the change to trusted was published before the stream was marked passed")
	}
	k.advance(time.Minute + time.Second)
	if k.Trusted(out.Node) {
		t.Error("Trusted() still true after TrustedUntil")
	}
	if err := k.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := k.db.GetNode(context.Background(), "rig-1")
	if got.State != Suspect || !strings.HasPrefix(got.Reason, "trust expired") {
		t.Errorf("after the sweep: %v (%s), want suspect, trust expired", got.State, got.Reason)
	}
}

// Evidence for another nonce fails, names the check, and the node is
// told at once (it stops its trusted-tier work).
func TestAppraiseWrongNonce(t *testing.T) {
	k := newKeeper(t, "")
	n := enrolSim(t, k)
	k.setPassed(true)
	out, err := k.Appraise(context.Background(), "rig-1", []byte("the nonce the verifier asked for"), evidence(t, n, []byte("a nonce the owner chose instead!")), k.setPassed)
	if err != nil {
		t.Fatal(err)
	}
	if out.Node.State != Untrusted || !strings.Contains(out.Node.Reason, string(attestation.CheckNonce)) {
		t.Errorf("wrong nonce: %v (%s), want untrusted on the nonce check", out.Node.State, out.Node.Reason)
	}
	if k.passed || out.Checkpoint != nil {
		t.Error("a failed appraisal left the stream passed or issued a checkpoint")
	}
	if len(k.notified) != 1 || k.notified[0].GetState() != Untrusted {
		t.Errorf("node told %v, want one untrusted verdict", k.notified)
	}
}

// Revocation holds: a revoked node that then proves a good boot stays
// untrusted with the operator's reason; demotions never improve a state.
func TestRevokeHolds(t *testing.T) {
	k := newKeeper(t, "")
	n := enrolSim(t, k)
	ctx := context.Background()
	if _, err := k.Revoke(ctx, "rig-1", "stolen"); err != nil {
		t.Fatal(err)
	}
	nonce := []byte("a fresh nonce, thirty-two bytes!")
	out, err := k.Appraise(ctx, "rig-1", nonce, evidence(t, n, nonce), k.setPassed)
	if err != nil {
		t.Fatal(err)
	}
	if out.Node.State != Untrusted || !strings.Contains(out.Node.Reason, "stolen") {
		t.Errorf("revoked node after a good appraisal: %v (%s)", out.Node.State, out.Node.Reason)
	}
	k.Demote(ctx, "rig-1", Suspect, "missed a deadline")
	got, _ := k.db.GetNode(ctx, "rig-1")
	if got.State != Untrusted || !strings.Contains(got.Reason, "stolen") {
		t.Errorf("Demote(suspect) changed an untrusted node: %v (%s)", got.State, got.Reason)
	}
	if _, err := k.Revoke(ctx, "nobody", "x"); err == nil {
		t.Error("Revoke of an unknown node succeeded")
	}
}

// A restarted verifier trusts nobody until they pass again.
func TestRestartDemotes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	k := newKeeper(t, path)
	n := enrolSim(t, k)
	nonce := []byte("a fresh nonce, thirty-two bytes!")
	if out, err := k.Appraise(context.Background(), "rig-1", nonce, evidence(t, n, nonce), k.setPassed); err != nil || out.Node.State != Trusted {
		t.Fatalf("appraise: %v, %v", out.Node, err)
	}
	k.db.Close()
	k2 := newKeeper(t, path)
	got, err := k2.db.GetNode(context.Background(), "rig-1")
	if err != nil || got.State != Suspect || !strings.Contains(got.Reason, "restarted") {
		t.Errorf("after a restart: %+v, %v; want suspect", got, err)
	}
}
