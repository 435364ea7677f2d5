// Command agent is the RigOS worker agent. It proves the rig's measured
// boot to the platform's verifier with the TPM, over one outbound stream.
//
//	agent -config /etc/rigos/agent.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rigos/rigos/agent/internal/config"
	"github.com/rigos/rigos/agent/internal/daemon"
	pconfig "github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		if errors.Is(err, daemon.ErrReboot) {
			os.Exit(layout.ExitReboot)
		}
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", layout.AgentConfig, "configuration file")
	flag.Parse()
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := pconfig.NewLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return daemon.Run(ctx, cfg, log)
}
