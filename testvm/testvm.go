// Package testvm boots RigOS images in QEMU the way a rig boots them:
// UEFI firmware (OVMF) with Secure Boot and our keys enrolled, a software
// TPM (swtpm), virtio disk and user-mode networking (the host is 10.0.2.2
// inside the guest), under TCG (no KVM needed). The serial console goes
// to a file that tests wait on. Every process it starts is stopped by
// Stop, and by the hard timeout.
package testvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Firmware files from Debian's ovmf package.
const (
	CodeSecureBoot = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	VarsTemplate   = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// OwnerGUID owns RigOS's Secure Boot certificates in the firmware.
const OwnerGUID = "8ed7969d-b6ae-5798-b07b-381bdb75a686"

// FirmwareRefused matches OVMF refusing to start the boot image.
var FirmwareRefused = regexp.MustCompile(`(?:failed to (?:load|start) Boot[0-9A-F]{4} .*(?:Access Denied|Security Violation))|No bootable option or device was found`)

// Available reports what is missing to boot VMs here.
func Available() error {
	var errs []error
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "swtpm"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not installed", tool))
		}
	}
	for _, f := range []string{CodeSecureBoot, VarsTemplate} {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("OVMF firmware missing: %s", f))
		}
	}
	return errors.Join(errs...)
}

// PrepareVars writes OVMF variables at out with the PK, KEK and db
// certificates from keysDir (PK.crt, KEK.crt, db.crt) enrolled, and
// Secure Boot on or off. virtFwVars is hack/virt-fw-vars.sh.
func PrepareVars(virtFwVars, keysDir string, secureBoot bool, out string) error {
	args := []string{"--input", VarsTemplate, "--output", out,
		"--set-pk", OwnerGUID, filepath.Join(keysDir, "PK.crt"),
		"--add-kek", OwnerGUID, filepath.Join(keysDir, "KEK.crt"),
		"--add-db", OwnerGUID, filepath.Join(keysDir, "db.crt")}
	// With PK enrolled OVMF enforces Secure Boot unless SecureBootEnable
	// is explicitly off.
	if secureBoot {
		args = append(args, "--secure-boot")
	} else {
		args = append(args, "--set-false", "SecureBootEnable")
	}
	if b, err := exec.Command(virtFwVars, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("preparing firmware variables: %v: %s", err, b)
	}
	return nil
}

// Options for Start.
type Options struct {
	// Image is the qcow2 disk; the VM writes to a throwaway overlay.
	Image string
	// Vars are the firmware variables (PrepareVars); copied.
	Vars string
	// Dir is the VM's work folder (console.log, TPM state, overlay).
	Dir string
	// Memory for the guest. Default is "256M" (init_on_free makes more
	// memory slower to boot under TCG).
	Memory string
	// Timeout kills the VM. Default is 5 minutes.
	Timeout time.Duration
	// EKCA, if set, is a folder for a local CA that certifies the TPM's
	// EK (swtpm_setup with swtpm_localca), as a TPM vendor would. The CA
	// is created on first use; its root is EKCARoot(EKCA).
	EKCA string
	// Reuse boots the same machine again: the disk overlay, the TPM
	// state and the firmware variables already in Dir are kept.
	Reuse bool
	// Forward are QEMU host forwards ("tcp:127.0.0.1:HOSTPORT-:GUESTPORT").
	Forward []string
	// Disks are more qcow2 disks, attached after the image (vdb, vdc…),
	// written in place; zero writes are stored as zeros (detect-zeroes).
	Disks []string
	// NoImage boots without the image's disk (a stick taken out): the
	// Disks alone are attached, the first as vda.
	NoImage bool
}

// EKCARoot and EKCAIntermediate are the certificates of a local EK CA.
func EKCARoot(dir string) string         { return filepath.Join(dir, "swtpm-localca-rootca-cert.pem") }
func EKCAIntermediate(dir string) string { return filepath.Join(dir, "issuercert.pem") }

// provisionEK gives the TPM in tpmDir EK certificates from the CA in ca.
func provisionEK(tpmDir, ca string) error {
	if err := os.MkdirAll(ca, 0o700); err != nil {
		return err
	}
	localca := filepath.Join(tpmDir, "swtpm-localca.conf")
	setup := filepath.Join(tpmDir, "swtpm_setup.conf")
	if err := os.WriteFile(localca, []byte(fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
		ca, filepath.Join(ca, "signkey.pem"), EKCAIntermediate(ca), filepath.Join(ca, "certserial"))), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(setup, []byte(fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\n", localca)), 0o600); err != nil {
		return err
	}
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", tpmDir, "--create-ek-cert", "--create-platform-cert",
		"--config", setup, "--overwrite").CombinedOutput()
	if err != nil {
		return fmt.Errorf("swtpm_setup: %v: %s", err, out)
	}
	return nil
}

// Disk is the VM's disk in dir: a qcow2 overlay holding everything the
// VM wrote (qcow2 keeps written clusters as they are, so the owner's
// offline view of the disk is in it).
func Disk(dir string) string { return filepath.Join(dir, "disk.qcow2") }

// VM is a running virtual machine.
type VM struct {
	Console string // path of the serial console log
	cancel  context.CancelFunc
	qemu    *exec.Cmd
	swtpm   *exec.Cmd
	done    chan struct{}
	err     error
	stop    sync.Once
}

// Start boots the VM.
func Start(o Options) (*VM, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if o.Memory == "" {
		o.Memory = "256M"
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	tpmDir := filepath.Join(o.Dir, "tpm")
	if err := os.MkdirAll(tpmDir, 0o700); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(tpmDir, "tpm2-00.permall"))
	reuseTPM := o.Reuse && statErr == nil
	if o.EKCA != "" && !reuseTPM {
		if err := provisionEK(tpmDir, o.EKCA); err != nil {
			return nil, err
		}
	}
	vars := filepath.Join(o.Dir, "vars.fd")
	if _, err := os.Stat(vars); err != nil || !o.Reuse {
		b, err := os.ReadFile(o.Vars)
		if err != nil {
			return nil, fmt.Errorf("reading firmware variables: %w", err)
		}
		if err := os.WriteFile(vars, b, 0o600); err != nil {
			return nil, err
		}
	}
	overlay := Disk(o.Dir)
	if _, err := os.Stat(overlay); err != nil || !o.Reuse {
		abs, _ := filepath.Abs(o.Image)
		_ = os.Remove(overlay)
		if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("creating overlay: %v: %s", err, b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	sock := filepath.Join(tpmDir, "swtpm.sock")
	v := &VM{Console: filepath.Join(o.Dir, "console.log"), cancel: cancel, done: make(chan struct{})}
	_ = os.Remove(v.Console)
	v.swtpm = exec.CommandContext(ctx, "swtpm", "socket", "--tpm2", "--tpmstate", "dir="+tpmDir,
		"--ctrl", "type=unixio,path="+sock, "--flags", "not-need-init", "--terminate")
	v.swtpm.Stderr, _ = os.Create(filepath.Join(o.Dir, "swtpm.log"))
	if err := v.swtpm.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting swtpm: %w", err)
	}
	if err := waitFile(sock, 10*time.Second); err != nil {
		v.Stop()
		return nil, fmt.Errorf("swtpm did not start: %w", err)
	}
	// One host thread runs both vCPUs (thread=single). With QEMU's
	// default multi-threaded TCG, a vCPU could run stale kernel text
	// while the other patched it (static keys flip when the first
	// container's cgroup appears): the guest died with "Oops: int3" in
	// the middle of an instruction, which a test saw as "node
	// disconnected". Round-robin vCPUs see each write to code at once.
	args := []string{
		"-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", o.Memory,
		"-machine", "q35,smm=on", "-nodefaults", "-no-reboot", "-display", "none",
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + CodeSecureBoot,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
		"-chardev", "socket,id=chrtpm,path=" + sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
		"-device", "tpm-tis,tpmdev=tpm0"}
	args = append(args, diskArgs(overlay, o)...) // before the NIC, as the firmware's boot order expects
	args = append(args, "-netdev", netdev(o.Forward), "-device", "virtio-net-pci,netdev=n0",
		"-device", "virtio-rng-pci",
		// A hardware watchdog, which init arms on an update's trial boot;
		// it resets the VM (which -no-reboot turns into QEMU exiting).
		"-device", "i6300esb",
		"-serial", "file:"+v.Console)
	v.qemu = exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	v.qemu.Stdout, _ = os.Create(filepath.Join(o.Dir, "qemu.log"))
	v.qemu.Stderr = v.qemu.Stdout
	if err := v.qemu.Start(); err != nil {
		v.Stop()
		return nil, fmt.Errorf("starting QEMU: %w", err)
	}
	go func() {
		v.err = v.qemu.Wait()
		close(v.done)
	}()
	return v, nil
}

// diskArgs are the QEMU options attaching the image's overlay (unless
// o.NoImage) and o.Disks.
func diskArgs(overlay string, o Options) []string {
	var args []string
	files := o.Disks
	if !o.NoImage {
		files = append([]string{overlay}, files...)
	}
	for i, f := range files {
		id := fmt.Sprintf("d%d", i)
		drive := "file=" + f + ",if=none,id=" + id + ",format=qcow2"
		if f != overlay {
			drive += ",detect-zeroes=on"
		}
		args = append(args, "-drive", drive, "-device", "virtio-blk-pci,drive="+id)
	}
	return args
}

func netdev(forward []string) string {
	s := "user,id=n0"
	for _, f := range forward {
		s += ",hostfwd=" + f
	}
	return s
}

func waitFile(p string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", p, d)
		}
		time.Sleep(20 * time.Millisecond) // polling for a socket to appear, bounded
	}
}

// ConsoleText returns the console output so far.
func (v *VM) ConsoleText() string {
	b, _ := os.ReadFile(v.Console)
	return string(b)
}

// ErrExited is returned by WaitFor when the VM stopped first.
var ErrExited = errors.New("VM exited")

// WaitFor waits until the console matches one of res and returns the
// index of the first that matched, or fails after d or when the VM exits.
func (v *VM) WaitFor(d time.Duration, res ...*regexp.Regexp) (int, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		text := v.ConsoleText()
		for i, re := range res {
			if re.MatchString(text) {
				return i, nil
			}
		}
		select {
		case <-v.done:
			text = v.ConsoleText()
			for i, re := range res {
				if re.MatchString(text) {
					return i, nil
				}
			}
			return -1, fmt.Errorf("%w (%v) before the console showed %v", ErrExited, v.err, res)
		case <-deadline.C:
			return -1, fmt.Errorf("console did not show %v within %s; last lines:\n%s", res, d, tail(text, 15))
		case <-tick.C:
		}
	}
}

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.done }

// Stop kills QEMU and swtpm and waits for them.
func (v *VM) Stop() {
	v.stop.Do(func() {
		v.cancel()
		if v.qemu != nil && v.qemu.Process != nil {
			<-v.done
		}
		if v.swtpm != nil && v.swtpm.Process != nil {
			_ = v.swtpm.Wait()
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
