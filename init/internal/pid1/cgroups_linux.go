package pid1

import (
	"errors"
	"fmt"
	"os"

	"github.com/rigos/rigos/pkg/layout"
)

// The agent and containerd run in cgroups of their own. The agent's CPU
// weight is ten times the default every workload's cgroup gets: it must
// answer challenges within their deadline however busy workloads keep
// the CPUs.
const (
	AgentCgroup     = layout.CgroupRoot + "/rigos.agent"
	RuntimeCgroup   = layout.CgroupRoot + "/rigos.runtime"
	AgentCPUWeight  = "1000"
	cgroupControls  = "+cpu +memory +pids"
	subtreeControls = layout.CgroupRoot + "/cgroup.subtree_control"
)

func setupCgroups() error {
	if err := os.WriteFile(subtreeControls, []byte(cgroupControls), 0); err != nil {
		return fmt.Errorf("enabling cgroup controllers: %w", err)
	}
	for _, d := range []string{AgentCgroup, RuntimeCgroup} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
	}
	if err := os.WriteFile(AgentCgroup+"/cpu.weight", []byte(AgentCPUWeight), 0); err != nil {
		return fmt.Errorf("agent CPU weight: %w", err)
	}
	return nil
}
