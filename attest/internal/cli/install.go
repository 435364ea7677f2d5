package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	adminsrv "github.com/rigos/rigos/attest/internal/admin"
	"github.com/rigos/rigos/pkg/api/apiv1"
)

// installNode asks a connected node to install itself onto a disk:
//
//	attest install -node rig-… -disk nvme0n1 [-wipe]
func installNode(fs *flag.FlagSet, args []string) error {
	sock := fs.String("admin", "/run/rigos-attest/admin.sock", "admin socket")
	node := fs.String("node", "", "node ID (required)")
	disk := fs.String("disk", "", `the internal disk to install to: its kernel name (nvme0n1, sdb) or "auto", the largest disk without partitions (required)`)
	wipe := fs.Bool("wipe", false, "install over a disk that is not empty: everything on it is lost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("install: -node is required (attest nodes lists them)")
	}
	if _, err := apiv1.CheckInstall(*disk, *wipe); err != nil {
		return fmt.Errorf("install: -disk: %w", err)
	}
	c, closeConn, err := adminClient(*sock)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), adminsrv.InstallTimeout+time.Minute)
	defer cancel()
	e, err := c.Install(ctx, &apiv1.InstallRequest{NodeId: *node, Disk: *disk, Wipe: *wipe})
	if err != nil {
		return err
	}
	fmt.Println(installLine(e))
	if e.GetState() == apiv1.InstallState_INSTALL_STATE_FAILED {
		return errors.New("install failed: nothing on the node changed; fix what the line above says and run it again")
	}
	return nil
}

// installLine describes an install event on one line.
func installLine(e *apiv1.InstallEvent) string {
	switch e.GetState() {
	case apiv1.InstallState_INSTALL_STATE_REBOOTING:
		return fmt.Sprintf("install to %s: %d MiB written in %.1fs, read back in %.1fs; boot entry Boot%04X first; rebooting into the disk (the stick can be removed)",
			e.GetDisk(), e.GetBytes()>>20, float64(e.GetWriteMs())/1000, float64(e.GetVerifyMs())/1000, e.GetBootEntry())
	case apiv1.InstallState_INSTALL_STATE_FAILED:
		return fmt.Sprintf("install to %s FAILED: %s", e.GetDisk(), e.GetReason())
	case apiv1.InstallState_INSTALL_STATE_WRITING:
		return fmt.Sprintf("install to %s: writing %d MiB", e.GetDisk(), e.GetTotalBytes()>>20)
	}
	return "install: " + e.GetState().String()
}
