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
	for _, p := range []string{SystemBinDir, CARoots, ESPPlan} {
		if path.IsAbs(p) || path.Clean(p) != p {
			t.Errorf("%q: want a clean relative path", p)
		}
	}
	if got := InSystem(CARoots); !strings.HasPrefix(got, SystemMount+"/") {
		t.Errorf("InSystem(%q) = %q, want it under %s", CARoots, got, SystemMount)
	}
}
