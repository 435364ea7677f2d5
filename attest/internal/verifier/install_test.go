package verifier

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/session"
)

// Install goes to the connected node, and its answer comes back to the
// caller and into GetNode; a bad disk name never reaches the node, an
// unknown or disconnected node is named. A node that ends its session
// for the reboot has its last event delivered first.
func TestInstallRelay(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	out := session.NewOutbox(nil)
	end := make(chan struct{})
	asked := make(chan *apiv1.Install, 4)
	reply := func(m *apiv1.Install, e *apiv1.InstallEvent) {
		e.RequestId = m.GetRequestId()
		out.Deliver(&apiv1.AgentMessage{Msg: &apiv1.AgentMessage_InstallEvent{InstallEvent: e}})
	}
	var held *apiv1.Install // sdb's answer waits for sdc's request
	heldSDB := make(chan struct{})
	node := session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Outbox: out, End: end,
		Install: func(m *apiv1.Install) {
			switch m.GetDisk() {
			case "sdb":
				held = m
				close(heldSDB)
				return
			case "sdc": // answered first, then sdb: each caller gets its own answer
				reply(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_FAILED, Disk: "sdc", Reason: "sdc is read-only"})
				if held != nil {
					reply(held, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_FAILED, Disk: "sdb", Reason: "sdb is too small"})
				}
				return
			}
			asked <- m
			if m.GetDisk() == "vda" {
				reply(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_FAILED, Disk: "vda", Reason: "vda is the disk RigOS booted from"})
				return
			}
			reply(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_WRITING, Disk: m.GetDisk()})
			reply(m, &apiv1.InstallEvent{State: apiv1.InstallState_INSTALL_STATE_REBOOTING, Disk: m.GetDisk(), Bytes: 1 << 30, BootEntry: 3})
			close(end) // the agent's installer ends the session once its last event is out
		}}
	stop := h.session(node)
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		req  *apiv1.InstallRequest
		code codes.Code
	}{
		{&apiv1.InstallRequest{NodeId: "rig-1", Disk: "../vda"}, codes.InvalidArgument},
		{&apiv1.InstallRequest{NodeId: "rig-1", Disk: ""}, codes.InvalidArgument},
		{&apiv1.InstallRequest{NodeId: "rig-9", Disk: "sdb"}, codes.NotFound},
		{&apiv1.InstallRequest{NodeId: "rig-1", Disk: "auto", Wipe: true}, codes.InvalidArgument},
	} {
		if _, err := h.admin.Install(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("Install(%v) = %v, want %s", tc.req, err, tc.code)
		}
	}
	if len(asked) != 0 {
		t.Fatalf("refused requests reached the node: %v", <-asked)
	}
	// Two callers at once: each gets the answer to its own request.
	answers := make(chan *apiv1.InstallEvent, 2)
	go func() {
		e, _ := h.admin.Install(ctx, &apiv1.InstallRequest{NodeId: "rig-1", Disk: "sdb"})
		answers <- e
	}()
	<-heldSDB // the node has sdb's request; its answer waits for sdc's
	if e, err := h.admin.Install(ctx, &apiv1.InstallRequest{NodeId: "rig-1", Disk: "sdc"}); err != nil || e.GetDisk() != "sdc" {
		t.Fatalf("concurrent install to sdc answered %v, %v", e, err)
	}
	if e := <-answers; e.GetDisk() != "sdb" || e.GetReason() != "sdb is too small" {
		t.Errorf("concurrent install to sdb answered %v", e)
	}
	e, err := h.admin.Install(ctx, &apiv1.InstallRequest{NodeId: "rig-1", Disk: "vda"})
	if err != nil || e.GetState() != apiv1.InstallState_INSTALL_STATE_FAILED || e.GetReason() == "" {
		t.Fatalf("install to vda: %v, %v; want the node's refusal", e, err)
	}
	e, err = h.admin.Install(ctx, &apiv1.InstallRequest{NodeId: "rig-1", Disk: "nvme0n1", Wipe: true})
	if err != nil || e.GetState() != apiv1.InstallState_INSTALL_STATE_REBOOTING || e.GetBytes() != 1<<30 || e.GetBootEntry() != 3 {
		t.Fatalf("install: %v, %v; want REBOOTING", e, err)
	}
	if m := <-asked; m.GetDisk() != "vda" {
		t.Errorf("first request the node got: %v", m)
	}
	if m := <-asked; m.GetDisk() != "nvme0n1" || !m.GetWipe() {
		t.Errorf("second request the node got: %v, want nvme0n1 with wipe", m)
	}
	// The node closed its side: the session ends as the node asked.
	if err := stop(); !errors.Is(err, session.ErrEnded) {
		t.Errorf("session ended with %v, want ErrEnded", err)
	}
	d, err := h.admin.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: "rig-1"})
	if err != nil || d.GetInstall().GetState() != apiv1.InstallState_INSTALL_STATE_REBOOTING || d.GetInstall().GetDisk() != "nvme0n1" {
		t.Errorf("GetNode's install = %v, %v", d.GetInstall(), err)
	}
	if _, err := h.admin.Install(ctx, &apiv1.InstallRequest{NodeId: "rig-1", Disk: "sdb"}); status.Code(err) != codes.Unavailable {
		t.Errorf("install on a disconnected node: %v, want Unavailable", err)
	}
}

// A node's text is cut on a character boundary and made valid UTF-8, so
// it can always be sent to the operator.
func TestTruncateKeepsUTF8(t *testing.T) {
	for _, s := range []string{strings.Repeat("a", 1023) + "é and more", "bad \xff byte", strings.Repeat("€", 400)} {
		got := truncate(s, 1024)
		if !utf8.ValidString(got) || len(got) > 1024+len("…") {
			t.Errorf("truncate(%q…) = %q…: valid %t, %d bytes", s[:8], got[:8], utf8.ValidString(got), len(got))
		}
		if _, err := proto.Marshal(&apiv1.InstallEvent{Reason: got}); err != nil {
			t.Errorf("marshalling the truncated text: %v", err)
		}
	}
}
