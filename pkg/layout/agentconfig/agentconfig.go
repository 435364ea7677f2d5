// Package agentconfig is the agent's configuration file, as the imager
// bakes it into the image (layout.AgentConfig) and the agent loads it:
// its fields and their JSON names, defaults and validation. Loading a
// file (and resolving relative paths) is the agent's
// (agent/internal/config).
package agentconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout"
)

// Config is the agent configuration file (JSON). Relative paths are
// relative to the file's folder.
type Config struct {
	// NodeID identifies the rig to the platform. Default is derived from
	// the TPM's endorsement key ("rig-" and 16 hex digits), so one image
	// serves many rigs.
	NodeID string `json:"node_id"`
	// Verifier is the verifier's host:port. Required.
	Verifier string `json:"verifier"`
	// CACert is the CA (PEM) that signed the verifier's certificate.
	// Required.
	CACert string `json:"ca_cert"`
	// ServerName overrides the TLS name checked. Default is the host of
	// Verifier.
	ServerName string `json:"server_name"`
	// TPM is "device" or "simulator" (development only: a simulated
	// measured boot on the go-tpm-tools simulator, needs a cgo build).
	// Default is "device".
	TPM string `json:"tpm"`
	// TPMPaths are the devices tried in order. Default is /dev/tpmrm0,
	// /dev/tpm0.
	TPMPaths []string `json:"tpm_paths"`
	// SimulatorSeed fixes the simulator's EK. Default is 0.
	SimulatorSeed int64 `json:"simulator_seed"`
	// StateDir keeps the TPM-wrapped AK. Default is /var/lib/rigos-agent.
	StateDir string `json:"state_dir"`
	// RuntimeLog is the runtime event log init and the agent append to.
	// Default is /run/rigos/runtime.cel
	// (layout.RuntimeLog).
	RuntimeLog string `json:"runtime_log"`
	// Containerd is containerd's socket. Empty means this node runs no
	// workloads.
	Containerd string `json:"containerd"`
	// ScratchDir holds workloads' scratch space, wiped when they end.
	// Default is /var/lib/rigos/scratch.
	ScratchDir string `json:"scratch_dir"`
	// GPUs is "auto" (use the NVIDIA GPUs NVML finds; needs an agent
	// built with cgo and the driver) or "off". Default is "auto".
	GPUs string `json:"gpus"`
	// CDIDir is where the agent writes the GPUs' CDI specification for
	// containerd. Default is /run/cdi.
	CDIDir string `json:"cdi_dir"`
	// PlanFile is the supplier's ASK plan (pkg/askplan) on the EFI
	// partition. Default is /run/rigos/esp/RIGOS/plan.json. When it
	// exists it replaces Plan; when it is malformed the node takes no
	// workloads and says why.
	PlanFile string `json:"plan_file"`
	// Plan is what the supplier sells when there is no plan file:
	// workloads asking for more are refused. Zero fields mean the whole
	// machine; its version and price are not used. Default max_duration
	// is "24h".
	Plan askplan.Plan `json:"plan"`
	// Install lets the verifier have the node install the disk it booted
	// from onto an internal disk and reboot into it (apiv1.Install). RigOS
	// images set it; an agent running elsewhere refuses installs.
	Install bool `json:"install"`
	// ReconnectMin and ReconnectMax bound the reconnect backoff.
	// Defaults are "1s" and "1m".
	ReconnectMin config.Duration `json:"reconnect_min"`
	ReconnectMax config.Duration `json:"reconnect_max"`
	// LogLevel is debug, info, warn or error. Default is "info".
	LogLevel string `json:"log_level"`
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.TPM == "" {
		c.TPM = "device"
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/rigos-agent"
	}
	if c.RuntimeLog == "" {
		c.RuntimeLog = layout.RuntimeLog
	}
	if c.GPUs == "" {
		c.GPUs = "auto"
	}
	if c.CDIDir == "" {
		c.CDIDir = layout.CDIDir
	}
	if c.PlanFile == "" {
		c.PlanFile = layout.PlanFile
	}
	if c.ScratchDir == "" {
		c.ScratchDir = layout.ScratchDir
	}
	if c.Plan.MaxDuration == 0 {
		c.Plan.MaxDuration = config.Duration(askplan.DefaultMaxDuration)
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = config.Duration(time.Second)
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = config.Duration(time.Minute)
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.ServerName == "" {
		if h, _, err := net.SplitHostPort(c.Verifier); err == nil {
			c.ServerName = h
		}
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Verifier); err != nil {
		errs = append(errs, fmt.Errorf("verifier %q: want host:port", c.Verifier))
	}
	if c.CACert == "" {
		errs = append(errs, errors.New("ca_cert is required"))
	}
	if c.TPM != "device" && c.TPM != "simulator" {
		errs = append(errs, fmt.Errorf("tpm %q: want device or simulator", c.TPM))
	}
	if c.GPUs != "auto" && c.GPUs != "off" {
		errs = append(errs, fmt.Errorf("gpus %q: want auto or off", c.GPUs))
	}
	if c.Plan.CPUs < 0 || c.Plan.MemoryMB < 0 || c.Plan.GPUs < 0 {
		errs = append(errs, errors.New("plan: negative resources"))
	}
	if c.ReconnectMin > c.ReconnectMax {
		errs = append(errs, errors.New("reconnect_min exceeds reconnect_max"))
	}
	if _, err := config.ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Encode returns c as the imager writes it into the image: indented
// JSON, keys in sorted order, ending in a newline. Fields left at their
// zero value are left out, for the agent to fill in its defaults when it
// loads the file, except node_id: an empty one is written to say that
// the node derives its ID from its TPM.
func Encode(c *Config) ([]byte, error) {
	set, err := fields(c)
	if err != nil {
		return nil, err
	}
	zero, err := fields(&Config{})
	if err != nil {
		return nil, err
	}
	for k, v := range set {
		if k != "node_id" && bytes.Equal(v, zero[k]) {
			delete(set, k)
		}
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// fields encodes c as one JSON value per field.
func fields(c *Config) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}
