// Package config loads the agent's file configuration. The file's type
// (fields, defaults, validation) is pkg/layout/agentconfig, shared with
// the imager, which bakes it into the initramfs.
package config

import (
	"fmt"
	"path/filepath"

	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout/agentconfig"
)

// Config is the agent configuration file (JSON); see agentconfig.Config.
type Config = agentconfig.Config

// Load reads path, applies defaults and validates.
func Load(path string) (*Config, error) {
	var c Config
	if err := config.Load(path, &c); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	c.CACert, c.StateDir, c.RuntimeLog = config.Resolve(dir, c.CACert), config.Resolve(dir, c.StateDir), config.Resolve(dir, c.RuntimeLog)
	c.ScratchDir, c.PlanFile = config.Resolve(dir, c.ScratchDir), config.Resolve(dir, c.PlanFile)
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}
