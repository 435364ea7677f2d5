package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	adminsrv "github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// updateNode streams a build to a connected node, which writes it into
// its other slot and boots it once:
//
//	attest update -node rig-… -build 3f2a9c1d04e7 [-force]
func updateNode(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	node := fs.String("node", "", "node ID (required)")
	build := fs.String("build", "", "the build to install: a folder in the verifier's update_dir, with its manifest in manifest_dir (required)")
	force := fs.Bool("force", false, "reboot at once even while workloads run (they are killed)")
	fetch := fs.Bool("fetch", false, "the node fetches the build over HTTPS from the verifier's update_url instead of receiving it on its stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" || *build == "" {
		return errors.New("update: -node and -build are required (attest nodes lists the nodes)")
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), adminsrv.UpdateTimeout+time.Minute)
	defer cancel()
	e, err := c.Update(ctx, &apiv1.UpdateRequest{NodeId: *node, Build: *build, Force: *force, Fetch: *fetch})
	if err != nil {
		return err
	}
	fmt.Println(updateLine(e))
	if e.GetState() == apiv1.UpdateState_UPDATE_STATE_FAILED {
		return errors.New("update failed: the node still boots the build it runs; fix what the line above says and run it again")
	}
	return nil
}

// updateLine describes an update event on one line.
func updateLine(e *apiv1.UpdateEvent) string {
	slot := strings.ToUpper(e.GetSlot())
	switch e.GetState() {
	case apiv1.UpdateState_UPDATE_STATE_RECEIVING:
		return fmt.Sprintf("update to %s: receiving %d of %d MiB into slot %s", e.GetBuild(), e.GetBytes()>>20, e.GetTotalBytes()>>20, slot)
	case apiv1.UpdateState_UPDATE_STATE_WAITING, apiv1.UpdateState_UPDATE_STATE_REBOOTING:
		then := "rebooting into it once"
		if e.GetState() == apiv1.UpdateState_UPDATE_STATE_WAITING {
			then = "it reboots into it once no workload runs (attest update -force reboots now)"
		}
		return fmt.Sprintf("update to %s: %d MiB written to slot %s in %.1fs, read back in %.1fs; Boot%04X set in BootNext; %s; the boot after it is the old slot's",
			e.GetBuild(), e.GetBytes()>>20, slot, float64(e.GetWriteMs())/1000, float64(e.GetVerifyMs())/1000, e.GetBootEntry(), then)
	case apiv1.UpdateState_UPDATE_STATE_FAILED:
		return fmt.Sprintf("update to %s FAILED: %s", e.GetBuild(), e.GetReason())
	case apiv1.UpdateState_UPDATE_STATE_COMMITTED:
		return fmt.Sprintf("update COMMITTED: slot %s is the default (Boot%04X first); the other builds' state keys are dropped %s", slot, e.GetBootEntry(), e.GetReason())
	case apiv1.UpdateState_UPDATE_STATE_BOOTED:
		return fmt.Sprintf("update to %s BOOTED: %s", e.GetBuild(), e.GetReason())
	}
	return "update: " + e.GetState().String()
}
