//go:build !sim

package daemon

import (
	"errors"
	"log/slog"

	"github.com/rigos/rigos/agent/internal/config"
)

// ErrNoSimulator is returned for tpm "simulator" by a production build.
var ErrNoSimulator = errors.New(`tpm "simulator": this agent is a production build without the TPM simulator; use tpm "device", or build a development agent with: go build -tags sim ./agent`)

func openSimulator(*config.Config, *slog.Logger) (nodeTPM, error) {
	return nodeTPM{}, ErrNoSimulator
}
