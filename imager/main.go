// Command imager builds a bootable RigOS image, reproducibly:
//
//	imager -out out -kernel "$(kernel/fetch.sh)" -verifier 10.0.2.2:7443 -ca ca.crt
//
// It writes rigos.raw (dd it to a USB stick), rigos.qcow2 (QEMU),
// rigos.efi (the signed UKI), initrd.img and manifest.json (the signed
// reference manifest for the verifier's manifest folder).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/imager"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "imager:", err)
		os.Exit(1)
	}
}

func run() error {
	var o imager.Options
	var static, gateway, dns, extra string
	flag.StringVar(&o.Out, "out", "out", "output folder")
	flag.StringVar(&o.Keys, "keys", ".cache/keys", "Secure Boot and manifest keys (development keys are generated when missing)")
	flag.StringVar(&o.KernelRoot, "kernel", "", "unpacked kernel package (the folder kernel/fetch.sh prints)")
	flag.StringVar(&o.Nvidia, "nvidia", "", "NVIDIA driver folder (kernel/nvidia/build.sh prints it); empty: an image without a GPU driver")
	flag.StringVar(&o.Inputs, "inputs", "", "unpacked pinned Debian inputs: systemd-stub, mkfs.erofs, libseccomp (default: what pkg/imager/inputs/fetch.sh prints; it fetches them)")
	flag.StringVar(&o.Stub, "stub", "", "systemd-stub instead of the pinned one (needs -stub-sha256)")
	flag.StringVar(&o.StubSHA256, "stub-sha256", "", "hex SHA-256 of -stub; the build stops when the file differs")
	flag.StringVar(&o.Verifier, "verifier", "", "verifier host:port baked into the agent")
	flag.StringVar(&o.VerifierCA, "ca", "", "verifier TLS CA certificate (PEM)")
	flag.StringVar(&o.NodeID, "node", "", "node ID (default: derived from the TPM's EK)")
	flag.StringVar(&o.Console, "console", "ttyS0", "kernel console")
	flag.StringVar(&extra, "cmdline", "", "extra kernel command-line settings")
	flag.StringVar(&static, "static", "", "static address (CIDR) instead of DHCP")
	flag.StringVar(&gateway, "gateway", "", "gateway for -static")
	flag.StringVar(&dns, "dns", "", "comma-separated DNS servers for -static")
	flag.StringVar(&o.Plan, "plan", "", "the supplier's ASK plan (JSON, see pkg/askplan), written to RIGOS/plan.json on the ESP")
	flag.StringVar(&o.CARoots, "ca-roots", "", "PEM bundle of the CAs registries are verified with (hack/ca-roots.sh prints Debian's, pinned); without it pulls work over plain HTTP only")
	msDB := flag.Bool("microsoft-db", true, "enrol Microsoft's option-ROM UEFI CAs into db beside RigOS's key when the firmware is in Setup Mode (GPU and NIC option ROMs need them)")
	flag.Int64Var(&o.Epoch, "epoch", 0, "build time, Unix seconds (default: SOURCE_DATE_EPOCH or 2026-01-01)")
	flag.Parse()
	o.NoMicrosoftDB = !*msDB
	if o.Epoch == 0 {
		fmt.Sscan(os.Getenv("SOURCE_DATE_EPOCH"), &o.Epoch)
	}
	if extra != "" {
		o.ExtraCmdline = strings.Fields(extra)
	}
	if static != "" {
		o.Network = bootconfig.Network{Mode: "static", Address: static, Gateway: gateway}
		if dns != "" {
			o.Network.DNS = strings.Split(dns, ",")
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return fmt.Errorf("run the imager from the RigOS source tree (go env GOMOD: %v)", err)
	}
	o.Source = filepath.Dir(strings.TrimSpace(string(out)))
	o.Log = os.Stdout
	r, err := imager.Build(o)
	if err != nil {
		return err
	}
	fmt.Printf("done: build %s, UKI %d bytes, initramfs %d bytes\n", r.Build, r.UKISize, r.InitrdSize)
	return nil
}
