package pid1

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
)

// loadGPU loads the NVIDIA modules from the system partition when an
// NVIDIA GPU is present and creates the device nodes (the job
// nvidia-modprobe does elsewhere). The kernel finds the GSP firmware
// under /lib/firmware, which points at the system partition's.
func loadGPU(sys sysfs, g *bootconfig.GPU) gpuDriver {
	var d gpuDriver
	if !hasNVIDIAGPU(sys.deviceAliases(), g) {
		return d
	}
	d.attempted = true
	if err := os.Symlink(layout.InSystem("lib/firmware"), "/lib/firmware"); err != nil && !errors.Is(err, os.ErrExist) {
		d.err = fmt.Errorf("pointing /lib/firmware at the system partition: %w", err)
		return d
	}
	loaded, err := loadModules(sys, layout.SystemMount, g.Modules)
	for name := range loaded {
		d.loaded = append(d.loaded, name)
	}
	sort.Strings(d.loaded)
	if err != nil {
		d.err = err
		return d
	}
	d.nodes, d.err = makeNvidiaNodes(loaded["nvidia_uvm"])
	return d
}

func makeNvidiaNodes(uvm bool) ([]string, error) {
	infos, _ := filepath.Glob("/proc/driver/nvidia/gpus/*/information")
	var contents [][]byte
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		contents = append(contents, b)
	}
	minors, err := nvidiaMinors(contents)
	if err != nil {
		return nil, err
	}
	var uvmMajor uint32
	if uvm {
		devs, err := os.ReadFile("/proc/devices")
		if err != nil {
			return nil, err
		}
		if uvmMajor, err = charMajor(devs, "nvidia-uvm"); err != nil {
			return nil, err
		}
	}
	var made []string
	for _, n := range nvidiaNodes(minors, uvmMajor, uvm) {
		// 0666 as nvidia-modprobe makes them: only the agent runs on the
		// host, and containers get the nodes their GPUs allow (CDI).
		err := unix.Mknod(n.Path, unix.S_IFCHR|0o666, int(unix.Mkdev(n.Major, n.Minor)))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return made, fmt.Errorf("creating %s: %w", n.Path, err)
		}
		_ = os.Chmod(n.Path, 0o666) // the umask narrowed it
		made = append(made, n.Path)
	}
	return made, nil
}
