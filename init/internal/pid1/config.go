// Package pid1 is RigOS's init: the Go program the kernel starts as PID 1
// from the initramfs. It mounts the kernel file systems, loads the
// allowlisted modules and then disables module loading, applies the
// hardening sysctls, records boot phases in the TPM, brings up the
// network, starts and supervises the agent, reaps orphans, and reboots
// when something it cannot recover from happens. It starts nothing else:
// there is no shell, getty or login anywhere in the image.
package pid1

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rigos/rigos/pkg/config"
)

// ConfigPath is where the imager bakes init's configuration.
const ConfigPath = "/etc/rigos/init.json"

// Network configures the first NIC with link.
type Network struct {
	// Mode is "dhcp" or "static". Default is "dhcp".
	Mode string `json:"mode"`
	// Interface, if set, is used instead of the first NIC with link.
	Interface string `json:"interface,omitempty"`
	// Address (CIDR) and Gateway for static mode.
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// DNS servers for static mode.
	DNS []string `json:"dns,omitempty"`
	// Timeout for link and DHCP. Default is "30s".
	Timeout config.Duration `json:"timeout,omitempty"`
}

// Config is init's configuration (JSON, baked into the initramfs).
type Config struct {
	Network Network `json:"network"`
	// Agent is the agent's command line. Default is
	// ["/usr/bin/agent", "-config", "/etc/rigos/agent.json"].
	Agent []string `json:"agent,omitempty"`
	// Modules lists module files in load order, relative to
	// /lib/modules. Written by the imager.
	Modules []string `json:"modules,omitempty"`
	// BuildTime is the image's build time (Unix seconds): the clock is
	// never set earlier than this.
	BuildTime int64 `json:"build_time,omitempty"`
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.Network.Mode == "" {
		c.Network.Mode = "dhcp"
	}
	if c.Network.Timeout == 0 {
		c.Network.Timeout = config.Duration(30 * time.Second)
	}
	if len(c.Agent) == 0 {
		c.Agent = []string{"/usr/bin/agent", "-config", "/etc/rigos/agent.json"}
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	switch c.Network.Mode {
	case "dhcp":
	case "static":
		if _, err := netip.ParsePrefix(c.Network.Address); err != nil {
			errs = append(errs, fmt.Errorf("network.address %q: want CIDR such as 10.0.2.15/24", c.Network.Address))
		}
		if _, err := netip.ParseAddr(c.Network.Gateway); err != nil {
			errs = append(errs, fmt.Errorf("network.gateway %q: want an IP address", c.Network.Gateway))
		}
		for _, d := range c.Network.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				errs = append(errs, fmt.Errorf("network.dns %q: want an IP address", d))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("network.mode %q: want dhcp or static", c.Network.Mode))
	}
	if len(c.Agent) == 0 || c.Agent[0] == "" || c.Agent[0][0] != '/' {
		errs = append(errs, errors.New("agent: want an absolute path first"))
	}
	return errors.Join(errs...)
}

// ParseConfig decodes and validates init's configuration.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := config.Decode(b, &c); err != nil {
		return nil, fmt.Errorf("init config: %w", err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("init config: %w", err)
	}
	return &c, nil
}

// Sysctls are the hardening settings init applies, in order.
var Sysctls = []struct{ Key, Value, Reason string }{
	{"kernel.kptr_restrict", "2", "hide kernel pointers"},
	{"kernel.dmesg_restrict", "1", "kernel log for CAP_SYSLOG only"},
	{"kernel.unprivileged_bpf_disabled", "1", "no BPF for unprivileged users (cannot be undone)"},
	{"net.core.bpf_jit_harden", "2", "constant blinding in the BPF JIT"},
	{"kernel.kexec_load_disabled", "1", "no kexec into another kernel (cannot be undone)"},
	{"kernel.perf_event_paranoid", "3", "no perf events for unprivileged users"},
	{"kernel.yama.ptrace_scope", "3", "no ptrace at all (cannot be undone)"},
	{"kernel.sysrq", "0", "no magic SysRq"},
	{"kernel.core_pattern", "|/bin/false", "no core dumps written anywhere"},
	{"fs.suid_dumpable", "0", "no core dumps of privileged processes"},
	{"fs.protected_symlinks", "1", "symlink races in shared folders"},
	{"fs.protected_hardlinks", "1", "hardlink races in shared folders"},
	{"fs.protected_fifos", "2", "FIFO races in shared folders"},
	{"fs.protected_regular", "2", "file races in shared folders"},
	{"kernel.unprivileged_userns_clone", "0", "no user namespaces for unprivileged users"},
	{"net.ipv4.conf.all.rp_filter", "1", "drop spoofed source addresses"},
	{"net.ipv4.conf.all.accept_redirects", "0", "ignore ICMP redirects"},
	{"net.ipv6.conf.all.accept_redirects", "0", "ignore ICMPv6 redirects"},
}
