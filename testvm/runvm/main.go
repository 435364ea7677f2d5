// Command runvm boots a RigOS disk image in QEMU with OVMF, Secure Boot
// (RigOS keys enrolled) and swtpm, and shows the serial console:
//
//	runvm -image out/rigos.qcow2 -keys .cache/keys
//
// It stops the VM on Ctrl-C, after -timeout, or when the console shows
// -until (a regular expression).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/rigos/rigos/testvm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "runvm:", err)
		os.Exit(1)
	}
}

func run() error {
	image := flag.String("image", "out/rigos.qcow2", "qcow2 disk image")
	keys := flag.String("keys", ".cache/keys", "Secure Boot keys the image was signed with")
	secure := flag.Bool("secure-boot", true, "Secure Boot on")
	timeout := flag.Duration("timeout", 10*time.Minute, "stop the VM after this long")
	until := flag.String("until", "", "stop when the console matches this regular expression")
	quiet := flag.Bool("quiet", false, "do not copy the console to standard output")
	memory := flag.String("memory", "256M", "guest memory")
	flag.Parse()
	dir, err := os.MkdirTemp("", "rigos-runvm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return err
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	vars := filepath.Join(dir, "vars.fd")
	if err := testvm.PrepareVars(filepath.Join(root, "hack", "virt-fw-vars.sh"), *keys, *secure, vars); err != nil {
		return err
	}
	vm, err := testvm.Start(testvm.Options{Image: *image, Vars: vars, Dir: dir, Timeout: *timeout, Memory: *memory})
	if err != nil {
		return err
	}
	defer vm.Stop()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var re *regexp.Regexp
	if *until != "" {
		if re, err = regexp.Compile(*until); err != nil {
			return err
		}
	}
	var off int64
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if f, err := os.Open(vm.Console); err == nil {
			f.Seek(off, io.SeekStart)
			n, _ := io.Copy(map[bool]io.Writer{true: io.Discard, false: os.Stdout}[*quiet], f)
			off += n
			f.Close()
		}
		if re != nil && re.MatchString(vm.ConsoleText()) {
			return nil
		}
		select {
		case <-sig:
			return nil
		case <-vm.Done():
			return nil
		case <-tick.C:
		}
	}
}
