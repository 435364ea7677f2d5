package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// rolloutCmd starts, extends, pauses, resumes or shows a build's
// rollout:
//
//	attest rollout -build B -percent 10 [-parallel 2] [-max-failed 5] [-force]
//	attest rollout -build B -nodes rig-1,rig-2
//	attest rollout -build B [-wait]
//	attest rollout -build B -pause | -cancel | -resume [-retry-failed] [-max-failed 10]
func rolloutCmd(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	build := fs.String("build", "", "the build to roll out: as attest update -build (required)")
	nodes := fs.String("nodes", "", "comma-separated node IDs to update")
	percent := fs.Uint("percent", 0, "update this share of the fleet (1-100; raising it later adds nodes)")
	parallel := fs.Uint("parallel", 0, "nodes updating at once (default 1; kept when extending)")
	maxFailed := fs.Int("max-failed", -1, "share of the rollout's nodes (percent) that may fail before it halts (default 0)")
	force := fs.Bool("force", false, "reboot nodes at once even while workloads run (they are killed)")
	fetch := fs.Bool("fetch", false, "nodes fetch the build over HTTPS from the verifier's update_url instead of receiving it on their stream")
	pause := fs.Bool("pause", false, "start no more nodes (the ones updating finish)")
	resume := fs.Bool("resume", false, "go on with a paused, halted or cancelled rollout")
	cancelRollout := fs.Bool("cancel", false, "end the rollout: nodes not started are skipped (and free for another build's rollout)")
	retry := fs.Bool("retry-failed", false, "with -resume: try the failed nodes again")
	wait := fs.Bool("wait", false, "follow the rollout until it is done, halted or paused")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *build == "" {
		return errors.New("rollout: -build is required (attest rollouts lists the rollouts)")
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx := context.Background()
	var maxP *uint32
	if *maxFailed >= 0 {
		v := uint32(min(*maxFailed, 101))
		maxP = &v
	}
	var ro *apiv1.Rollout
	switch {
	case *pause || *resume || *cancelRollout:
		ro, err = c.SetRollout(ctx, &apiv1.SetRolloutRequest{Build: *build, Pause: *pause, Resume: *resume, Cancel: *cancelRollout, RetryFailed: *retry, MaxFailedPercent: maxP})
	case *nodes != "" || *percent > 0:
		var ids []string
		if *nodes != "" {
			for _, id := range strings.Split(*nodes, ",") {
				if id = strings.TrimSpace(id); id == "" {
					return fmt.Errorf("rollout: -nodes %q has an empty entry: give node IDs separated by commas", *nodes)
				}
				ids = append(ids, id)
			}
		}
		var forceP, fetchP *bool
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "force":
				forceP = force
			case "fetch":
				fetchP = fetch
			}
		})
		ro, err = c.StartRollout(ctx, &apiv1.StartRolloutRequest{Build: *build, NodeIds: ids, Percent: uint32(min(*percent, 101)),
			Parallel: uint32(min(*parallel, 1<<16)), MaxFailedPercent: maxP, Force: forceP, Fetch: fetchP})
	default:
		ro, err = c.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: *build})
	}
	if err != nil {
		return err
	}
	if !*wait {
		printRollout(ro)
		return rolloutResult(ro)
	}
	seen := map[string]string{}
	for {
		for _, n := range ro.GetNodes() {
			if line := n.GetState() + " " + n.GetReason(); seen[n.GetNodeId()] != line {
				seen[n.GetNodeId()] = line
				fmt.Printf("%s  %-10s %-9s %s\n", time.UnixMilli(n.GetUpdatedUnixMs()).UTC().Format(time.TimeOnly), n.GetNodeId(), n.GetState(), n.GetReason())
			}
		}
		if ro.GetState() != "running" {
			printRollout(ro)
			return rolloutResult(ro)
		}
		time.Sleep(2 * time.Second) // polling the admin socket
		if ro, err = c.GetRollout(ctx, &apiv1.GetRolloutRequest{Build: *build}); err != nil {
			return err
		}
	}
}

// rolloutResult is an error for a halted rollout, so scripts stop.
func rolloutResult(ro *apiv1.Rollout) error {
	if ro.GetState() == "halted" {
		return fmt.Errorf("the rollout of %s is halted: see the failed nodes above; attest rollout -build %s -resume -retry-failed tries them again", ro.GetBuild(), ro.GetBuild())
	}
	return nil
}

func rolloutSummary(ro *apiv1.Rollout) string {
	count := map[string]int{}
	for _, n := range ro.GetNodes() {
		count[n.GetState()]++
	}
	var parts []string
	for _, s := range []string{"done", "failed", "updating", "waiting", "rebooting", "booted", "pending", "skipped"} {
		if count[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[s], s))
		}
	}
	s := fmt.Sprintf("rollout of %s: %s, %d nodes (%s), %d at once, halts past %d%% failed",
		ro.GetBuild(), ro.GetState(), len(ro.GetNodes()), strings.Join(parts, ", "), ro.GetParallel(), ro.GetMaxFailedPercent())
	if ro.GetReason() != "" {
		s += ": " + ro.GetReason()
	}
	return s
}

func printRollout(ro *apiv1.Rollout) {
	fmt.Println(rolloutSummary(ro))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSTATE\tSINCE\tREASON")
	for _, n := range ro.GetNodes() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.GetNodeId(), n.GetState(), time.UnixMilli(n.GetUpdatedUnixMs()).UTC().Format(time.DateTime), n.GetReason())
	}
	w.Flush()
}

// listRollouts prints every rollout's summary.
func listRollouts(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	r, err := c.ListRollouts(context.Background(), &apiv1.ListRolloutsRequest{})
	if err != nil {
		return err
	}
	if len(r.GetRollouts()) == 0 {
		fmt.Println("no rollouts (attest rollout -build B -percent P starts one)")
	}
	for _, ro := range r.GetRollouts() {
		fmt.Println(rolloutSummary(ro))
	}
	return nil
}
