package verifier

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/attest/internal/hub"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/trust"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"google.golang.org/protobuf/proto"
)

// maxEventText bounds the free text of a stored workload event.
const maxEventText = 1024

// workloadMessage handles a workload event, log line or GPU report from
// a node: it records events (only for workloads sent to that node) and
// passes events and output to the workload's watchers.
func (v *Verifier) workloadMessage(ctx context.Context, node string, m *apiv1.AgentMessage) error {
	var u *apiv1.WorkloadUpdate
	var id string
	switch {
	case m.GetWorkloadEvent() != nil:
		e := m.GetWorkloadEvent()
		id = e.GetId()
		if admin.Terminal(e.GetState()) {
			// The workload has ended: its counter need not stay in memory
			// (later events are counted from the store).
			defer v.hub.ForgetSent(node, id)
		}
		ok, err := v.hub.TakeEvent(ctx, node, id)
		if err != nil {
			return err
		}
		if !ok {
			v.o.Logger.Warn("workload event dropped: not a workload sent to this node, or too many events", "node", node, "workload", truncate(id, 64))
			return nil
		}
		if err := v.o.Store.SaveWorkloadEvent(ctx, store.WorkloadEvent{
			Node: node, Workload: id, Time: v.o.Now(), State: e.GetState().Name(),
			Reason: truncate(e.GetReason(), maxEventText), ExitCode: int(e.GetExitCode()), OOMKilled: e.GetOomKilled(),
			ImageDigest: truncate(e.GetImageDigest(), 128),
		}); err != nil {
			return err
		}
		v.o.Logger.Info("workload", "node", node, "workload", e.GetId(), "state", e.GetState().Name(),
			"reason", truncate(e.GetReason(), maxEventText), "exit", e.GetExitCode(), "oom", e.GetOomKilled())
		u = &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Event{Event: e}}
	case m.GetGpuReport() != nil:
		v.gpuReport(node, m.GetGpuReport())
		return nil
	case m.GetWorkloadLog() != nil:
		id = m.GetWorkloadLog().GetId()
		u = &apiv1.WorkloadUpdate{Update: &apiv1.WorkloadUpdate_Log{Log: m.GetWorkloadLog()}}
	default:
		return nil
	}
	v.hub.WorkloadUpdate(node, id, u)
	return nil
}

// installEvent keeps a node's install event (its free text bounded) for
// GetNode and the Install call waiting on it, and logs it.
func (v *Verifier) installEvent(node string, e *apiv1.InstallEvent) {
	e.Reason, e.Disk = truncate(e.GetReason(), maxEventText), truncate(e.GetDisk(), 64)
	v.hub.InstallEvent(node, e)
	v.o.Logger.Info("install", "node", node, "state", e.GetState().String(), "disk", e.GetDisk(), "reason", e.GetReason(),
		"bytes", e.GetBytes(), "write_ms", e.GetWriteMs(), "verify_ms", e.GetVerifyMs(), "boot_entry", e.GetBootEntry())
}

// updateEvent keeps a node's update event (its free text bounded) for
// GetNode and the Update call waiting on it, and logs it. A node
// rebooting into an update, on stream s, is remembered for
// updateBooted.
func (v *Verifier) updateEvent(node string, e *apiv1.UpdateEvent, s *hub.Conn) {
	e.Reason, e.Build, e.Slot = truncate(e.GetReason(), maxEventText), truncate(e.GetBuild(), 64), truncate(e.GetSlot(), 8)
	e.RequestId = truncate(e.GetRequestId(), 64)
	if e.GetState() == apiv1.UpdateState_UPDATE_STATE_BOOTED {
		e.State = apiv1.UpdateState_UPDATE_STATE_UNSPECIFIED // the verifier's to say
	}
	v.rebootingMu.Lock()
	// Only an update this verifier sent decides anything after the reboot.
	if e.GetState() == apiv1.UpdateState_UPDATE_STATE_REBOOTING && v.hub.IssuedUpdate(node, e.GetRequestId()) {
		if v.rebooting == nil {
			v.rebooting = map[string]rebootingInto{}
		}
		v.rebooting[node] = rebootingInto{event: e, stream: s}
	} else {
		delete(v.rebooting, node)
	}
	v.rebootingMu.Unlock()
	v.publishUpdate(node, e, v.keepUpdate(node, e))
}

// keepUpdate says whether a node's update event is stored: a step
// forward of an update this verifier sent (RECEIVING, WAITING,
// REBOOTING, FAILED, each at most once), and the commit right after one
// it found booted. What a node sends of its own accord, or again, does
// not make the verifier write.
func (v *Verifier) keepUpdate(node string, e *apiv1.UpdateEvent) bool {
	rank := map[apiv1.UpdateState]int{
		apiv1.UpdateState_UPDATE_STATE_RECEIVING: 1, apiv1.UpdateState_UPDATE_STATE_WAITING: 2,
		apiv1.UpdateState_UPDATE_STATE_REBOOTING: 3, apiv1.UpdateState_UPDATE_STATE_FAILED: 4,
	}
	if e.GetState() == apiv1.UpdateState_UPDATE_STATE_COMMITTED {
		return v.hub.LastUpdate(node).GetState() == apiv1.UpdateState_UPDATE_STATE_BOOTED
	}
	if rank[e.GetState()] == 0 || !v.hub.IssuedUpdate(node, e.GetRequestId()) {
		return false
	}
	v.rebootingMu.Lock()
	defer v.rebootingMu.Unlock()
	k := v.kept[node]
	if k.request == e.GetRequestId() && k.rank >= rank[e.GetState()] {
		return false
	}
	if v.kept == nil {
		v.kept = map[string]keptUpdate{}
	}
	v.kept[node] = keptUpdate{request: e.GetRequestId(), rank: rank[e.GetState()]}
	return true
}

// keptUpdate is the last stored step of a node's update.
type keptUpdate struct {
	request string
	rank    int
}

// rebootingInto is an update a node said it reboots into, on stream.
type rebootingInto struct {
	event  *apiv1.UpdateEvent
	stream *hub.Conn
}

// updateBooted checks the first appraisal of a node on a stream after
// the one it rebooted into an update from: on the new build and trusted
// the update BOOTED; on another build (the firmware fell back to the old
// slot) or untrusted it FAILED, and the reason says which.
func (v *Verifier) updateBooted(node string, s *hub.Conn, build string, n *store.Node) {
	v.rebootingMu.Lock()
	p, ok := v.rebooting[node]
	if !ok || p.stream == s {
		v.rebootingMu.Unlock()
		return
	}
	delete(v.rebooting, node)
	v.rebootingMu.Unlock()
	e := &apiv1.UpdateEvent{State: apiv1.UpdateState_UPDATE_STATE_BOOTED, Build: p.event.GetBuild(), Slot: p.event.GetSlot(),
		RequestId: p.event.GetRequestId(), UnixMs: v.trust.Now().UnixMilli()}
	switch {
	case build != p.event.GetBuild():
		e.State = apiv1.UpdateState_UPDATE_STATE_FAILED
		on := "no known build"
		if build != "" {
			on = "build " + build
		}
		e.Reason = fmt.Sprintf("the node came back on %s, not %s: slot %s did not boot, and the firmware booted the old slot", on, p.event.GetBuild(), p.event.GetSlot())
	case n.State != trust.Trusted:
		e.State = apiv1.UpdateState_UPDATE_STATE_FAILED
		e.Reason = fmt.Sprintf("the node booted build %s from slot %s but is %s: %s", build, p.event.GetSlot(), store.StateText(n.State), n.Reason)
	default:
		e.Reason = fmt.Sprintf("the node booted build %s from slot %s and is trusted", build, p.event.GetSlot())
	}
	v.publishUpdate(node, e, true)
	// Marked after it is published: a reader that sees the mark sees
	// this event, or a later one, as the latest (rollout).
	if e.GetState() == apiv1.UpdateState_UPDATE_STATE_BOOTED {
		v.hub.MarkBooted(node, e.GetRequestId())
	}
}

// publishUpdate passes a node's update event on, logs it and, with keep,
// stores it for attest node after a restart.
func (v *Verifier) publishUpdate(node string, e *apiv1.UpdateEvent, keep bool) {
	v.hub.UpdateEvent(node, e)
	if keep {
		if b, err := proto.Marshal(e); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := v.o.Store.SaveUpdateEvent(ctx, node, v.trust.Now(), b); err != nil {
				v.o.Logger.Error("saving an update event", "node", node, "err", err)
			}
			cancel()
		}
	}
	v.o.Logger.Info("update", "node", node, "state", e.GetState().String(), "build", e.GetBuild(), "slot", e.GetSlot(), "reason", e.GetReason(),
		"bytes", e.GetBytes(), "total_bytes", e.GetTotalBytes(), "write_ms", e.GetWriteMs(), "verify_ms", e.GetVerifyMs(), "boot_entry", e.GetBootEntry())
}

// gpuReport keeps a node's latest GPU report and logs GPUs that turned
// unhealthy.
func (v *Verifier) gpuReport(node string, r *apiv1.GPUReport) {
	prev := v.hub.SetGPUs(node, r)
	was := map[string]bool{}
	for _, g := range prev.GetGpus() {
		was[g.GetUuid()] = g.GetHealthy()
	}
	for _, g := range r.GetGpus() {
		if healthy, seen := was[g.GetUuid()]; !g.GetHealthy() && (!seen || healthy) {
			v.o.Logger.Warn("GPU unhealthy", "node", node, "gpu", g.GetIndex(), "uuid", g.GetUuid(), "problems", g.GetProblems())
		}
	}
	if r.GetError() != "" {
		v.o.Logger.Warn("node cannot read its GPUs", "node", node, "err", r.GetError())
	}
}

// truncate bounds a node's free text to n bytes, cut on a character
// boundary, with invalid UTF-8 replaced: protobuf refuses to send
// invalid UTF-8, and a node's text must not make its records
// unreadable to the operator.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
