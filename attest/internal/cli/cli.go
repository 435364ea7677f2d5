// Package cli is the attest command line: the verifier daemon (serve),
// the development setup (devinit) and the operator's commands over the
// admin socket.
package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rigos/rigos/attest/internal/config"
	"github.com/rigos/rigos/attest/internal/devinit"
	"github.com/rigos/rigos/attest/internal/server"
	"github.com/rigos/rigos/pkg/api/apiv1"
	pconfig "github.com/rigos/rigos/pkg/config"
)

// Run runs the attest command line with args (without the program name).
func Run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("attest "+cmd, flag.ContinueOnError)
	switch cmd {
	case "serve":
		path := fs.String("config", "/etc/rigos/attest.json", "configuration file")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return serve(*path)
	case "devinit":
		o := devinit.Options{Manifests: devManifests()}
		fs.StringVar(&o.Dir, "dir", ".demo", "folder to write")
		fs.StringVar(&o.Listen, "listen", "127.0.0.1:7443", "verifier address")
		fs.StringVar(&o.NodeID, "node", "rig-demo", "node ID for the agent config")
		fs.StringVar(&o.SpotMean, "mean", "3s", "mean spot-check interval")
		fs.StringVar(&o.SpotMin, "min", "1s", "minimum spot-check interval")
		fs.StringVar(&o.SpotMax, "max", "10s", "maximum spot-check interval")
		fs.StringVar(&o.Deadline, "deadline", "5s", "answer deadline")
		extraKey := fs.String("manifest-key", "", "another manifest signing key (PEM) to trust, e.g. the imager's")

		if err := fs.Parse(args); err != nil {
			return err
		}
		if *extraKey != "" {
			abs, err := filepath.Abs(*extraKey)
			if err != nil {
				return err
			}
			o.ManifestKeys = []string{abs}
		}
		return devinit.Write(o)
	case "nodes", "watch", "node", "revoke", "accept-firmware":
		sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
		id := fs.String("id", "", "node ID (node, revoke, accept-firmware)")
		reason := fs.String("reason", "", "reason (revoke)")
		n := fs.Int("n", 0, "watch: stop after n changes (0: never)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return admin(cmd, *sock, *id, *reason, *n)
	case "run":
		return runWorkload(fs, args)
	case "stop":
		return stopWorkload(fs, args)
	case "install":
		return installNode(fs, args)
	case "update":
		return updateNode(fs, args)
	case "rollout":
		return rolloutCmd(fs, args)
	case "rollouts":
		return listRollouts(fs, args)
	}
	return fmt.Errorf("unknown command %q (serve, devinit, nodes, watch, node, revoke, accept-firmware, run, stop, install, update, rollout, rollouts)", cmd)
}

func serve(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := pconfig.NewLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if _, err := d.Manifests.Reload(); err != nil {
				log.Error("reloading manifests", "err", err)
			}
		}
	}()
	return d.Serve(ctx)
}

func adminClient(sock string) (apiv1.AdminClient, func(), error) {
	abs, err := filepath.Abs(sock)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(apiv1.MaxImageArchive+1<<20)))
	if err != nil {
		return nil, nil, err
	}
	return apiv1.NewAdminClient(conn), func() { conn.Close() }, nil
}

func admin(cmd, sock, id, reason string, n int) error {
	c, closeConn, err := adminClient(sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx := context.Background()
	switch cmd {
	case "nodes":
		r, err := c.ListNodes(ctx, &apiv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NODE\tSTATE\tCLASS\tCONNECTED\tAPPRAISALS\tTRUSTED UNTIL\tREASON")
		for _, nd := range r.GetNodes() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%d\t%s\t%s\n", nd.GetNodeId(), state(nd.GetState()), class(nd.GetTrustClass()),
				nd.GetConnected(), nd.GetAppraisals(), when(nd.GetTrustedUntilUnixMs()), nd.GetReason())
		}
		return w.Flush()
	case "node":
		d, err := c.GetNode(ctx, &apiv1.GetNodeRequest{NodeId: id, History: 50})
		if err != nil {
			return err
		}
		nd := d.GetNode()
		fmt.Printf("node %s: %s (%s), EK %s, %d appraisals, reset count %d\n", nd.GetNodeId(), state(nd.GetState()),
			class(nd.GetTrustClass()), nd.GetEkFingerprint(), nd.GetAppraisals(), nd.GetResetCount())
		for _, h := range d.GetHistory() {
			fmt.Printf("  %s  %-9s %s %s\n", when(h.GetUnixMs()), state(h.GetState()), h.GetReason(), h.GetManifest())
			for _, w := range h.GetWorkloads() {
				fmt.Printf("                measured workload %s\n", w)
			}
		}
		switch {
		case d.GetAskPlanError() != "":
			fmt.Printf("ASK plan unusable (no workloads): %s\n", d.GetAskPlanError())
		case d.GetAskPlan() != "":
			fmt.Printf("ASK plan: %s\n", d.GetAskPlan())
		}
		for _, l := range hardwareLines(d.GetHardware()) {
			fmt.Println(l)
		}
		for _, l := range gpuLines(d.GetGpus()) {
			fmt.Println(l)
		}
		if e := d.GetInstall(); e != nil {
			fmt.Printf("%s  %s\n", when(e.GetUnixMs()), installLine(e))
		}
		if e := d.GetUpdate(); e != nil {
			fmt.Printf("%s  %s\n", when(e.GetUnixMs()), updateLine(e))
		}
		if len(d.GetWorkloads()) > 0 {
			fmt.Println("workload events:")
		}
		for _, e := range d.GetWorkloads() {
			fmt.Printf("  %s  %s %s%s\n", when(e.GetUnixMs()), e.GetId(), e.GetState().Name(), eventDetail(e))
		}
		return nil
	case "watch":
		s, err := c.Watch(ctx, &apiv1.WatchRequest{})
		if err != nil {
			return err
		}
		for i := 0; n == 0 || i < n; i++ {
			ch, err := s.Recv()
			if err != nil {
				return err
			}
			fmt.Printf("%s  %-10s %-9s -> %-9s %s\n", when(ch.GetUnixMs()), ch.GetNodeId(), state(ch.GetFrom()), state(ch.GetTo()), ch.GetReason())
		}
		return nil
	case "revoke":
		_, err := c.Revoke(ctx, &apiv1.RevokeRequest{NodeId: id, Reason: reason})
		return err
	case "accept-firmware":
		_, err := c.AcceptFirmware(ctx, &apiv1.NodeRequest{NodeId: id})
		return err
	}
	return nil
}

func state(s apiv1.NodeState) string {
	if s == apiv1.NodeState_NODE_STATE_UNSPECIFIED {
		return "-"
	}
	return s.Name()
}

func class(c apiv1.TrustClass) string {
	switch c {
	case apiv1.TrustClass_TRUST_CLASS_DEV:
		return "dev"
	case apiv1.TrustClass_TRUST_CLASS_HARDWARE:
		return "hardware"
	}
	return "-"
}

func when(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Format("15:04:05.000")
}
