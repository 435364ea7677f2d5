package layout

import (
	"path"
	"slices"
	"strings"
	"testing"
)

// The list init's self-check compares with a walk of the booted system:
// sorted, absolute, init first.
func TestExecutables(t *testing.T) {
	got := Executables()
	want := []string{"/init", "/system/usr/bin/agent", "/system/usr/bin/containerd",
		"/system/usr/bin/containerd-shim-runc-v2", "/system/usr/bin/runc"}
	if !slices.Equal(got, want) {
		t.Errorf("Executables() = %v, want %v", got, want)
	}
	if !slices.IsSorted(SystemBinaries) {
		t.Errorf("SystemBinaries = %v, want sorted", SystemBinaries)
	}
}

// Absolute paths are clean and absolute; paths on a partition are
// relative to its root.
func TestPathsAreClean(t *testing.T) {
	for _, p := range []string{SystemMount, StateMount, ESPMount, CgroupRoot, RunDir, RuntimeLog, ResolvConf,
		DebugfsProbe, AgentStateDir, ContainerdState, ContainerdSocket, ContainerdTTRPCSocket, CDIDir,
		ContainerdRoot, ScratchDir, Init, ConfigDir, InitConfig, AgentConfig, ContainerdConfig, VerifierCA,
		ModulesDir, PlanFile, SystemPath} {
		if !path.IsAbs(p) || path.Clean(p) != p {
			t.Errorf("%q: want a clean absolute path", p)
		}
	}
	for _, p := range []string{SystemBinDir, NvidiaDir, GPUHelper, CARoots, ESPPlan, ESPBootUKI, ESPUKIDir, SlotUKI(SlotA), SlotUKI(SlotB)} {
		if path.IsAbs(p) || path.Clean(p) != p {
			t.Errorf("%q: want a clean relative path", p)
		}
	}
	if got := InSystem(CARoots); !strings.HasPrefix(got, SystemMount+"/") {
		t.Errorf("InSystem(%q) = %q, want it under %s", CARoots, got, SystemMount)
	}
}

// The GPT names and ESP paths of the slots, as the imager writes them and
// init and the tests look for them: an image in the field keeps them.
func TestSlots(t *testing.T) {
	if got, want := Slots(), []Slot{SlotA, SlotB}; !slices.Equal(got, want) {
		t.Errorf("Slots() = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		slot      Slot
		partition string
		uki       string
	}{
		{SlotA, "RIGOS-SYSTEM-A", "EFI/RIGOS/rigos-a.efi"},
		{SlotB, "RIGOS-SYSTEM-B", "EFI/RIGOS/rigos-b.efi"},
	} {
		if got := SystemPartition(tc.slot); got != tc.partition {
			t.Errorf("SystemPartition(%q) = %q, want %q", tc.slot, got, tc.partition)
		}
		if got := SlotUKI(tc.slot); got != tc.uki {
			t.Errorf("SlotUKI(%q) = %q, want %q", tc.slot, got, tc.uki)
		}
		if got, err := ParseSlot(string(tc.slot)); err != nil || got != tc.slot {
			t.Errorf("ParseSlot(%q) = %q, %v, want %q", tc.slot, got, err, tc.slot)
		}
	}
	names := map[string]bool{ESPPartition: true, StatePartition: true}
	for _, s := range Slots() {
		names[SystemPartition(s)] = true
	}
	if len(names) != 4 {
		t.Errorf("partition names %v: want four different names", names)
	}
	for _, bad := range []string{"", "A", "B", "c", "ab", " a", "a ", "0", "1"} {
		if got, err := ParseSlot(bad); err == nil {
			t.Errorf("ParseSlot(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzParseSlot(f *testing.F) {
	f.Add("a")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		sl, err := ParseSlot(s)
		if err == nil && !slices.Contains(Slots(), sl) {
			t.Errorf("ParseSlot(%q) = %q, not a slot", s, sl)
		}
		if err == nil && string(sl) != s {
			t.Errorf("ParseSlot(%q) = %q, want the input back", s, sl)
		}
	})
}
