// Package bootconfig is the configuration the imager bakes into the
// initramfs for init (layout.InitConfig, /etc/rigos/init.json): network,
// the agent's command line, the modules to load and the build time.
package bootconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout"
)

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
	// ["/system/usr/bin/agent", "-config", "/etc/rigos/agent.json"].
	Agent []string `json:"agent,omitempty"`
	// Containerd is containerd's command line, started once the state
	// partition is unlocked. Default is ["/system/usr/bin/containerd",
	// "--config", "/etc/rigos/containerd.toml"].
	Containerd []string `json:"containerd,omitempty"`
	// Modules lists the allowlisted modules and their dependencies in
	// load order. Written by the imager.
	Modules []Module `json:"modules,omitempty"`
	// GPU is the NVIDIA driver on the system partition; absent in an
	// image built without it. Written by the imager.
	GPU *GPU `json:"gpu,omitempty"`
	// BuildTime is the image's build time (Unix seconds): the clock is
	// never set earlier than this.
	BuildTime int64 `json:"build_time,omitempty"`
}

// Module is one kernel module the image may load.
type Module struct {
	Name string `json:"name"`
	// Path is relative to /lib/modules (layout.ModulesDir).
	Path string   `json:"path"`
	Deps []string `json:"deps,omitempty"`
	// Devices are modalias patterns of the hardware the module drives.
	// A wanted module with none (a file system) is always loaded; one with
	// some is loaded only when such hardware is present.
	Devices []string `json:"devices,omitempty"`
	// Wanted marks modules asked for in kernel/modules.txt; the others
	// load only as dependencies.
	Wanted bool `json:"wanted,omitempty"`
}

// GPU is the NVIDIA kernel driver an image carries on its system
// partition. Init loads its modules only when an NVIDIA display or 3D
// controller is present, after the system partition is verified and
// before module loading is locked.
type GPU struct {
	// Version is the driver version (550.163.01).
	Version string `json:"version"`
	// Modules in load order; Path is relative to the system partition
	// (layout.SystemMount). The wanted ones (NVIDIA's) have NVIDIA's PCI
	// aliases (GPUs, NVSwitches) as Devices; the kernel modules they
	// depend on (drm) load only as their dependencies.
	Modules []Module `json:"modules"`
	// Executables are the driver's programs on the system partition
	// (absolute paths: nvidia-smi), which containers get through the CDI
	// spec; the self-check allows them beside layout.Executables.
	Executables []string `json:"executables,omitempty"`
	// Signer names the certificate the modules are signed with, as
	// modsig.Signer prints it (RigOS's db certificate); the self-check
	// compares each module's signature with it.
	Signer string `json:"signer"`
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
		c.Agent = []string{layout.SystemBinary("agent"), "-config", layout.AgentConfig}
	}
	if len(c.Containerd) == 0 {
		c.Containerd = []string{layout.SystemBinary("containerd"), "--config", layout.ContainerdConfig}
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
	if len(c.Containerd) == 0 || c.Containerd[0] == "" || c.Containerd[0][0] != '/' {
		errs = append(errs, errors.New("containerd: want an absolute path first"))
	}
	if c.GPU != nil {
		for _, m := range c.GPU.Modules {
			if m.Name == "" || m.Path == "" || m.Path[0] == '/' || (m.Wanted && len(m.Devices) == 0) {
				errs = append(errs, fmt.Errorf("gpu.modules %q: want a name, a path relative to the system partition, and, for a wanted module, the devices it drives", m.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// Parse decodes and validates init's configuration.
func Parse(b []byte) (*Config, error) {
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
