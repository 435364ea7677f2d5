//go:build sim

package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/rigos/rigos/agent/internal/config"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/pkg/session"
)

// openSimulator boots the simulated measured boot into the TPM simulator
// (development builds only: -tags sim).
func openSimulator(cfg *config.Config, log *slog.Logger) (session.TPM, func() ([]byte, error), func(), error) {
	log.Warn("using the TPM simulator: development only, never trusted as hardware")
	n, err := simnode.Start(cfg.SimulatorSeed, devboot.Default(), filepath.Dir(cfg.RuntimeLog))
	if err != nil {
		return nil, nil, nil, err
	}
	return n.Att, n.ReadRuntimeLog, func() { n.Close() }, nil
}
