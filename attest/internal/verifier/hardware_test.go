package verifier

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/hwinfo"
	"github.com/rigos/rigos/pkg/session"
)

// The SMBIOS inventory a node sends in its hello shows in GetNode once
// the node has proven its TPM (as the node's claim; nothing checks it).
func TestHardwareInventoryInGetNode(t *testing.T) {
	inv, err := hwinfo.Read("../../../pkg/hwinfo/testdata/supermicro-x9drw")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	h.session(session.Node{ID: "rig-1", TPM: n.Att, RuntimeLog: n.ReadRuntimeLog, Hardware: inv})
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	cpu := func(socket string) *apiv1.HardwareProcessor {
		return &apiv1.HardwareProcessor{Socket: socket, Manufacturer: "Intel",
			Model: "Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz", Cores: 8, Threads: 16}
	}
	want := &apiv1.HardwareInventory{
		SmbiosVersion: "3.0.0",
		System:        &apiv1.HardwareIdentity{Manufacturer: "Supermicro", Product: "SYS-1027R-WRF", Version: "0123456789"},
		Board:         &apiv1.HardwareIdentity{Manufacturer: "Supermicro", Product: "X9DRW", Version: "0123456789"},
		Bios:          &apiv1.HardwareBIOS{Vendor: "American Megatrends Inc.", Version: "3.0c", ReleaseDate: "03/24/2014"},
		Processors:    []*apiv1.HardwareProcessor{cpu("CPU 1"), cpu("CPU 2")},
		Sockets:       2, MemoryBytes: 64 << 30, MemoryDevices: 16,
	}
	if diff := cmp.Diff(want, h.node("rig-1").GetHardware(), protocmp.Transform()); diff != "" {
		t.Errorf("GetNode(rig-1).Hardware differs (-want +got):\n%s", diff)
	}
}

// An oversized inventory is refused with the reason, before the
// activation, and nothing of it is kept; nor is a well-formed inventory
// from a stream that cannot prove the node's TPM.
func TestHardwareInventoryBounded(t *testing.T) {
	h := newHarness(t, testPolicy(), "")
	n := bootNode(t, 1, devboot.Default())
	h.run("rig-1", n, nil) // sends no inventory
	h.await("rig-1", to(apiv1.NodeState_NODE_STATE_TRUSTED))

	big := helloAs(t, "rig-1", n.Att, "")
	big.GetHello().Hardware = &apiv1.HardwareInventory{
		System: &apiv1.HardwareIdentity{Product: strings.Repeat("x", 100<<10)},
	}
	m, err := h.impostor(big)
	if !strings.Contains(m.GetRefusal().GetReason(), "hardware inventory: system.product: 102400 bytes, more than 256") {
		t.Fatalf("oversized inventory: got %v, %v; want a refusal naming system.product", m, err)
	}
	many := helloAs(t, "rig-1", n.Att, "")
	many.GetHello().Hardware = &apiv1.HardwareInventory{Processors: make([]*apiv1.HardwareProcessor, 10000)}
	m, err = h.impostor(many)
	if !strings.Contains(m.GetRefusal().GetReason(), "processors: 10000, more than 64") {
		t.Fatalf("10000 processors: got %v, %v; want a refusal naming processors", m, err)
	}

	// Well-formed, but the stream holds only the node's public values.
	claim := helloAs(t, "rig-1", n.Att, "")
	claim.GetHello().Hardware = &apiv1.HardwareInventory{System: &apiv1.HardwareIdentity{Product: "forged"}}
	if m, err := h.impostor(claim); m.GetRefusal() == nil && err == nil {
		t.Fatalf("impostor got %v", m)
	}
	if hw := h.node("rig-1").GetHardware(); hw != nil {
		t.Errorf("an unproven hello's inventory was kept: %v", hw)
	}
}
