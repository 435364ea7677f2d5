//go:build sim

package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/rigos/rigos/agent/internal/config"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/pkg/measure"
)

// openSimulator boots the simulated measured boot into the TPM simulator
// (development builds only: -tags sim).
func openSimulator(cfg *config.Config, log *slog.Logger) (nodeTPM, error) {
	log.Warn("using the TPM simulator: development only, never trusted as hardware")
	n, err := simnode.Start(cfg.SimulatorSeed, devboot.Default(), filepath.Dir(cfg.RuntimeLog))
	if err != nil {
		return nodeTPM{}, err
	}
	return nodeTPM{
		att: n.Att, runtimeLog: n.ReadRuntimeLog, close: func() { n.Close() },
		recorder: func() (*measure.Recorder, error) { return n.Recorder, nil },
	}, nil
}
