package verifier

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/imager/uki"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/session"
	"github.com/rigos/rigos/pkg/update/updatetest"
)

// writeBuild writes a build's output folder into dir/name and returns
// the manifest naming its UKIs.
func writeBuild(t *testing.T, dir, name string, system []byte) *attestation.Manifest {
	t.Helper()
	out := filepath.Join(dir, name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	m := devboot.Manifest(devboot.Default(), name)
	m.BootApplications = nil
	for _, s := range layout.Slots() {
		b := updatetest.FakeUKI("quiet "+layout.SlotParam+"="+string(s), 2<<20)
		d, err := uki.AuthenticodeDigest(b)
		if err != nil {
			t.Fatal(err)
		}
		m.BootApplications = append(m.BootApplications, hex.EncodeToString(d))
		if err := os.WriteFile(filepath.Join(out, layout.BuildUKI(s)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(out, layout.BuildSystem), system, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// updatingNode is a simulated node on build dev that takes an update
// into slot B and says REBOOTING once it has all of it (asked gets each
// Update, got the parts received); it does not reboot by itself.
func updatingNode(t *testing.T, id string, seed int64) (session.Node, chan *apiv1.Update, map[apiv1.UpdatePart]*bytes.Buffer) {
	n := bootNode(t, seed, devboot.Default())
	out := session.NewOutbox(nil)
	asked := make(chan *apiv1.Update, 4)
	got := map[apiv1.UpdatePart]*bytes.Buffer{apiv1.UpdatePart_UPDATE_PART_SYSTEM: {}, apiv1.UpdatePart_UPDATE_PART_UKI: {}}
	var req *apiv1.Update
	reply := func(e *apiv1.UpdateEvent) {
		e.RequestId, e.Build, e.Slot = req.GetRequestId(), req.GetBuild(), "b"
		out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: e}})
	}
	return session.Node{ID: id, TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Outbox: out,
		Update: func(m *apiv1.Update) {
			req = m
			asked <- m
			reply(&apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_RECEIVING})
		},
		UpdateChunk: func(c *apiv1.UpdateChunk) {
			b := got[c.GetPart()]
			if c.GetRequestId() != req.GetRequestId() || int64(b.Len()) != c.GetOffset() {
				reply(&apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_FAILED, Reason: "out of order"})
				return
			}
			b.Write(c.GetData())
			if c.GetPart() == apiv1.UpdatePart_UPDATE_PART_UKI && int64(b.Len()) == req.GetUkiBSize() {
				reply(&apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_REBOOTING, Bytes: int64(got[apiv1.UpdatePart_UPDATE_PART_SYSTEM].Len() + b.Len())})
			}
		}}, asked, got
}

// Update checks the build against its active manifest, streams the
// slot the node names, and returns the node's answer; a build without
// an active manifest, a UKI of another build or a bad name never reaches
// the node.
func TestUpdateRelay(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	dir := t.TempDir()
	system := make([]byte, 3*admin.UpdateChunkSize+5)
	rand.Read(system)
	next := writeBuild(t, dir, "next", system)
	writeBuild(t, dir, "unlisted", system)
	other := writeBuild(t, dir, "mixed", system)
	// "mixed" has slot B's UKI of another build.
	os.WriteFile(filepath.Join(dir, "mixed", layout.BuildUKI(layout.SlotB)), updatetest.FakeUKI(layout.SlotParam+"=b other", 10), 0o644)
	// "swapped" names slot A's UKI as slot B's.
	swapped := writeBuild(t, dir, "swapped", system)
	a, _ := os.ReadFile(filepath.Join(dir, "swapped", layout.BuildUKI(layout.SlotA)))
	os.WriteFile(filepath.Join(dir, "swapped", layout.BuildUKI(layout.SlotB)), a, 0o644)
	active := []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev"), next, other, swapped}
	h.v.admin.SetUpdates(admin.Updates{Dir: dir, Manifests: func() []*attestation.Manifest { return active }})

	node, asked, got := updatingNode(t, "rig-1", 1)
	stop := h.session(node)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		build string
		code  codes.Code
		want  string
	}{
		{"unlisted", codes.FailedPrecondition, "no active manifest"},
		{"../next", codes.InvalidArgument, "want a build name"},
		{"mixed", codes.FailedPrecondition, "not one of its manifest's boot applications"},
		{"swapped", codes.FailedPrecondition, "boots slot \"a\""},
		{"absent", codes.FailedPrecondition, "no active manifest"},
	} {
		_, err := h.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: "rig-1", Build: tc.build})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Update(%s) = %v, want %s naming %q", tc.build, err, tc.code, tc.want)
		}
	}
	if len(asked) != 0 {
		t.Fatalf("a refused update reached the node: %v", <-asked)
	}
	if _, err := h.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: "rig-9", Build: "next"}); status.Code(err) != codes.NotFound {
		t.Errorf("Update on an unknown node: %v, want NotFound", err)
	}

	e, err := h.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: "rig-1", Build: "next"})
	if err != nil || e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING || e.GetBuild() != "next" {
		t.Fatalf("Update(next) = %v, %v; want REBOOTING", e, err)
	}
	ukiB, _ := os.ReadFile(filepath.Join(dir, "next", layout.BuildUKI(layout.SlotB)))
	sum := sha256.Sum256(system)
	if m := <-asked; !bytes.Equal(m.GetSystemSha256(), sum[:]) || m.GetSystemSize() != int64(len(system)) || m.GetUkiBSize() != int64(len(ukiB)) {
		t.Errorf("the node was asked %v", m)
	}
	if !bytes.Equal(got[apiv1.UpdatePart_UPDATE_PART_SYSTEM].Bytes(), system) || !bytes.Equal(got[apiv1.UpdatePart_UPDATE_PART_UKI].Bytes(), ukiB) {
		t.Error("the node did not receive the system image and slot B's UKI")
	}
	d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil || d.GetUpdate().GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
		t.Errorf("GetNode's update = %v, %v", d.GetUpdate(), err)
	}

	// The node comes back on its old build: the update failed, and the
	// verifier says so.
	stop()
	h.session(node)
	for deadline := time.Now().Add(time.Minute); ; {
		d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1"})
		if err == nil && d.GetUpdate().GetState() == apiv1.UpdateState_UPDATE_STATE_FAILED {
			if want := "came back on build dev, not next"; !strings.Contains(d.GetUpdate().GetReason(), want) {
				t.Errorf("failed update's reason %q, want it to say %q", d.GetUpdate().GetReason(), want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed update recorded after the node came back on its old build: %v, %v", d.GetUpdate(), err)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}

// The first appraisal on a stream after the one a node rebooted from
// decides the update: the new build trusted is BOOTED, the new build
// untrusted FAILED; appraisals on the old stream decide nothing, a node
// cannot claim BOOTED itself, and a REBOOTING for a request this
// verifier did not send is not an update.
func TestUpdateBooted(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	old, fresh := &hub.Conn{}, &hub.Conn{}
	trusted := &store.Node{State: trust.Trusted}
	for name, tc := range map[string]struct {
		build string
		node  *store.Node
		want  apiv1.UpdateState
		why   string
	}{
		"booted":    {"next", trusted, apiv1.UpdateState_UPDATE_STATE_BOOTED, "booted build next from slot b and is trusted"},
		"old build": {"dev", trusted, apiv1.UpdateState_UPDATE_STATE_FAILED, "came back on build dev, not next"},
		"untrusted": {"next", &store.Node{State: trust.Untrusted, Reason: "pcr11"}, apiv1.UpdateState_UPDATE_STATE_FAILED, "is untrusted: pcr11"},
	} {
		h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_BOOTED, Build: "next"}, old)
		if e := h.v.hub.LastUpdate("rig-1"); e.GetState() == apiv1.UpdateState_UPDATE_STATE_BOOTED {
			t.Errorf("%s: a node claimed BOOTED itself", name)
		}
		// A REBOOTING for a request this verifier never sent decides nothing.
		h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_REBOOTING, Build: "next", Slot: "b", RequestId: "forged"}, old)
		h.v.updateBooted("rig-1", fresh, tc.build, tc.node)
		if e := h.v.hub.LastUpdate("rig-1"); e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
			t.Errorf("%s: a REBOOTING the verifier did not ask for decided the update: %v", name, e)
		}
		h.v.hub.IssueUpdate("rig-1", "u1")
		h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_REBOOTING, Build: "next", Slot: "b", RequestId: "u1"}, old)
		h.v.updateBooted("rig-1", old, "dev", trusted)
		if e := h.v.hub.LastUpdate("rig-1"); e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
			t.Errorf("%s: an appraisal on the stream the node rebooted from decided the update: %v", name, e)
		}
		h.v.updateBooted("rig-1", fresh, tc.build, tc.node)
		e := h.v.hub.LastUpdate("rig-1")
		if e.GetState() != tc.want || !strings.Contains(e.GetReason(), tc.why) {
			t.Errorf("%s: update %v, want %s naming %q", name, e, tc.want, tc.why)
		}
		h.v.updateBooted("rig-1", &hub.Conn{}, "dev", trusted) // decided once
		if got := h.v.hub.LastUpdate("rig-1"); got != e {
			t.Errorf("%s: a later appraisal changed the decided update to %v", name, got)
		}
	}
}

// A rollout over the admin API runs the real Update: the build is
// checked before any node is picked, the node gets it, and when the node
// comes back on its old build the verifier's FAILED halts the rollout,
// which says so to the operator.
func TestRolloutOverAdmin(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	dir := t.TempDir()
	system := make([]byte, admin.UpdateChunkSize+7)
	rand.Read(system)
	active := []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev"), writeBuild(t, dir, "next", system)}
	writeBuild(t, dir, "unlisted", system)
	h.v.admin.SetUpdates(admin.Updates{Dir: dir, Manifests: func() []*attestation.Manifest { return active }})
	node, asked, _ := updatingNode(t, "rig-1", 1)
	stop := h.session(node)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := h.admin.StartRollout(ctx, &apiv1.StartRolloutRequest{Build: "unlisted", Percent: 100}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("rollout of a build without a manifest: %v, want FailedPrecondition", err)
	}
	if _, err := h.admin.StartRollout(ctx, &apiv1.StartRolloutRequest{Build: "next", NodeIds: []string{"rig-1"}, Percent: 100}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("rollout to a list and a share: %v, want InvalidArgument", err)
	}
	if _, err := h.admin.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: "unlisted"}); status.Code(err) != codes.NotFound {
		t.Errorf("a refused rollout exists: %v", err)
	}
	ro, err := h.admin.StartRollout(ctx, &apiv1.StartRolloutRequest{Build: "next", Percent: 100})
	if err != nil || len(ro.GetNodes()) != 1 || ro.GetState() != "running" {
		t.Fatalf("StartRollout = %v, %v", ro, err)
	}
	select {
	case m := <-asked:
		if m.GetBuild() != "next" {
			t.Fatalf("the node was asked for %v", m)
		}
	case <-ctx.Done():
		t.Fatal("the rollout never sent the node the update")
	}
	for deadline := time.Now().Add(time.Minute); ; {
		ro, err = h.admin.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: "next"})
		if err == nil && ro.GetNodes()[0].GetState() == "rebooting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not see the node reboot: %v, %v", ro, err)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
	// The node "reboots" onto its old build.
	stop()
	h.session(node)
	for deadline := time.Now().Add(time.Minute); ; {
		ro, err = h.admin.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: "next"})
		if err == nil && ro.GetState() == "halted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout did not halt after the node came back on its old build: %v, %v", ro, err)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
	if n := ro.GetNodes()[0]; n.GetState() != "failed" || !strings.Contains(n.GetReason(), "came back on build dev, not next") {
		t.Errorf("the node's part in the rollout: %v", n)
	}
	l, err := h.admin.ListRollouts(ctx, &apiv1.ListRolloutsRequest{})
	if err != nil || len(l.GetRollouts()) != 1 || l.GetRollouts()[0].GetState() != "halted" {
		t.Errorf("ListRollouts = %v, %v", l, err)
	}
	if _, err := h.admin.SetRollout(ctx, &apiv1.SetRolloutRequest{Build: "next", Resume: true}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("resuming past the failure share: %v, want FailedPrecondition", err)
	}
}

// countLogs counts the records a logger writes, by message.
type countLogs struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countLogs) Enabled(context.Context, slog.Level) bool { return true }
func (c *countLogs) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Message]++
	return nil
}
func (c *countLogs) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *countLogs) WithGroup(string) slog.Handler      { return c }

func (c *countLogs) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

// A node that floods the verifier with update events gets a few through
// (each is logged); the rest are dropped with one warning, and the
// stream stays up.
func TestUpdateEventsBounded(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	logs := &countLogs{n: map[string]int{}}
	h.v.o.Logger = slog.New(logs) // before the node's session reads it
	n := bootNode(t, 1, devboot.Default())
	out := session.NewOutbox(nil)
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Outbox: out})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	const flood, marker = 500, 1 << 40
	send := func(b int64) {
		out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_RECEIVING, Bytes: b}}})
	}
	for i := range flood {
		send(int64(i))
	}
	// The marker is taken once the bucket refills; everything before it
	// has been handled then.
	for deadline := time.Now().Add(time.Minute); h.v.hub.LastUpdate("rig-1").GetBytes() != marker; {
		if time.Now().After(deadline) {
			t.Fatal("the verifier took no update event after the flood")
		}
		send(marker)
		time.Sleep(200 * time.Millisecond) // the bucket's refill, bounded by the deadline
	}
	taken := logs.count("update") - 1
	if taken > 100 || logs.count("install and update events dropped: the node sends more than the verifier takes") < 1 {
		t.Errorf("%d of %d flooded update events were taken and logged, want at most about %d, and a warning", taken, flood, NodeEventBurst)
	}
	t.Logf("%d of %d flooded update events taken", taken, flood)
}

// An update with fetch names the build's folder under the verifier's
// update_url and streams nothing: the node fetches the files itself. A
// verifier without update_url refuses it before the node hears of it.
func TestUpdateFetch(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	dir := t.TempDir()
	next := writeBuild(t, dir, "next", make([]byte, admin.UpdateChunkSize+3))
	active := []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev"), next}
	n := bootNode(t, 1, devboot.Default())
	out := session.NewOutbox(nil)
	asked := make(chan *apiv1.Update, 4)
	chunks := make(chan *apiv1.UpdateChunk, 4)
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Outbox: out,
		Update: func(m *apiv1.Update) {
			asked <- m
			for _, st := range []apiv1.UpdateState{apiv1.UpdateState_UPDATE_STATE_RECEIVING, apiv1.UpdateState_UPDATE_STATE_REBOOTING} {
				out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_UpdateEvent{UpdateEvent: &apiv1.UpdateEvent{
					State: st, RequestId: m.GetRequestId(), Build: m.GetBuild(), Slot: "b"}}})
			}
		},
		UpdateChunk: func(c *apiv1.UpdateChunk) { chunks <- c }})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	h.v.admin.SetUpdates(admin.Updates{Dir: dir, Manifests: func() []*attestation.Manifest { return active }})
	if _, err := h.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: "rig-1", Build: "next", Fetch: true}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "update_url") {
		t.Errorf("fetch without update_url: %v, want FailedPrecondition naming update_url", err)
	}
	if len(asked) != 0 {
		t.Fatal("a refused fetch reached the node")
	}
	h.v.admin.SetUpdates(admin.Updates{Dir: dir, URL: "https://updates.example.com/builds/", Manifests: func() []*attestation.Manifest { return active }})
	e, err := h.admin.Update(ctx, &apiv1.UpdateRequest{NodeId: "rig-1", Build: "next", Fetch: true})
	if err != nil || e.GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING {
		t.Fatalf("Update(fetch) = %v, %v; want REBOOTING", e, err)
	}
	if m := <-asked; m.GetUrl() != "https://updates.example.com/builds/next" || m.GetSystemSize() != admin.UpdateChunkSize+3 {
		t.Errorf("the node was asked %v", m)
	}
	if len(chunks) != 0 {
		t.Error("the verifier streamed chunks for an update the node fetches")
	}
}

// The steps forward of an update the verifier sent are kept in its
// store: attest node shows the latest after a restart. What a node
// sends of its own accord, or a step back, is not stored.
func TestUpdateEventKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	h := newHarness(t, testPolicy(), path)
	ctx := context.Background()
	if err := h.db.CreateNode(ctx, &store.Node{ID: "rig-1", EKFingerprint: "ek-1", EKPublic: []byte{1}, AKPublic: []byte{1}, State: trust.Trusted}); err != nil {
		t.Fatal(err)
	}
	h.v.hub.IssueUpdate("rig-1", "u1")
	h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_REBOOTING, Build: "next", Slot: "b", RequestId: "u1"}, &hub.Conn{})
	// Neither a request the verifier did not send, nor a step back of
	// its own, nor a commit it did not find booted, is stored.
	h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_FAILED, Build: "next", RequestId: "forged", Reason: "the node's own"}, &hub.Conn{})
	h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_RECEIVING, Build: "next", RequestId: "u1"}, &hub.Conn{})
	h.v.updateEvent("rig-1", &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_COMMITTED, Slot: "b"}, &hub.Conn{})
	h.stop()

	h = newHarness(t, testPolicy(), path)
	d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil || d.GetUpdate().GetState() != apiv1.UpdateState_UPDATE_STATE_REBOOTING || d.GetUpdate().GetRequestId() != "u1" {
		t.Fatalf("after a restart GetNode's update = %v, %v; want the REBOOTING of u1", d.GetUpdate(), err)
	}
}
