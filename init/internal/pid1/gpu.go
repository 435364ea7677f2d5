package pid1

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/modsig"
)

// gpuDriver is what loading the GPU driver did.
type gpuDriver struct {
	attempted bool // an NVIDIA GPU was present
	loaded    []string
	nodes     []string // device nodes created
	err       error
}

func (d gpuDriver) summary(g *bootconfig.GPU) string {
	switch {
	case !d.attempted:
		return fmt.Sprintf("NVIDIA driver %s: not loaded, no NVIDIA GPU present", g.Version)
	case d.err != nil:
		return fmt.Sprintf("NVIDIA driver %s: %v (this node offers no GPUs)", g.Version, d.err)
	}
	return fmt.Sprintf("NVIDIA driver %s: loaded %s; device nodes %s", g.Version, strings.Join(d.loaded, ", "), strings.Join(d.nodes, " "))
}

// hasNVIDIAGPU reports whether a device alias is an NVIDIA display or 3D
// controller (PCI vendor 0x10de, class 0x03), the devices the nvidia
// module's own aliases name.
func hasNVIDIAGPU(aliases []string, g *bootconfig.GPU) bool {
	for _, m := range g.Modules {
		if matchesAny(m.Devices, aliases) {
			return true
		}
	}
	return false
}

// GPUModulesCheck is the self-check of the GPU driver: every module the
// image lists is on the system partition and signed with the image's
// module key (the kernel enforces the signature when it loads one; this
// says so on the console, GPU or not), and whether it was loaded.
func GPUModulesCheck(g *bootconfig.GPU, d gpuDriver, read func(string) ([]byte, error)) Check {
	ok := true
	var names []string
	for _, m := range g.Modules {
		if !m.Wanted {
			continue // a kernel module the driver needs, signed by Debian
		}
		b, err := read(path.Join(layout.SystemMount, m.Path))
		if err != nil {
			ok = false
			names = append(names, m.Name+":missing")
			continue
		}
		s, err := modsig.ReadSigner(b)
		switch {
		case err != nil:
			ok = false
			names = append(names, m.Name+":"+err.Error())
		case s.String() != g.Signer:
			ok = false
			names = append(names, m.Name+":signed_by_"+s.String())
		default:
			names = append(names, m.Name)
		}
	}
	state := "not_loaded_no_NVIDIA_GPU"
	switch {
	case d.attempted && d.err != nil:
		state, ok = "load_failed", false
	case d.attempted:
		state = "loaded"
	}
	got := fmt.Sprintf("%s_%s_signed_by_module_key_%s", g.Version, strings.Join(names, ","), state)
	return Check{Name: "nvidia modules", OK: ok, Got: strings.ReplaceAll(got, " ", "_")}
}

// nvidiaMinors reads the GPUs' device minor numbers from the files
// /proc/driver/nvidia/gpus/*/information ("Device Minor: 3").
func nvidiaMinors(infos [][]byte) ([]int, error) {
	var out []int
	for _, info := range infos {
		found := false
		sc := bufio.NewScanner(bytes.NewReader(info))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok || strings.TrimSpace(k) != "Device Minor" {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 || n >= 255 {
				return nil, fmt.Errorf("NVIDIA GPU information: device minor %q", strings.TrimSpace(v))
			}
			out, found = append(out, n), true
		}
		if !found {
			return nil, fmt.Errorf("NVIDIA GPU information without a device minor")
		}
	}
	sort.Ints(out)
	return out, nil
}

// charMajor returns the major number /proc/devices gives the character
// device name.
func charMajor(procDevices []byte, name string) (uint32, error) {
	inChar := false
	sc := bufio.NewScanner(bytes.NewReader(procDevices))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "Character devices:":
			inChar = true
		case line == "Block devices:":
			inChar = false
		case inChar:
			f := strings.Fields(line)
			if len(f) == 2 && f[1] == name {
				n, err := strconv.ParseUint(f[0], 10, 32)
				if err != nil {
					return 0, fmt.Errorf("/proc/devices: major %q of %s", f[0], name)
				}
				return uint32(n), nil
			}
		}
	}
	return 0, fmt.Errorf("/proc/devices has no character device %s", name)
}

// nvidiaNode is one device node nvidia-modprobe would create.
type nvidiaNode struct {
	Path         string
	Major, Minor uint32
}

// nvidiaMajor is the NVIDIA driver's fixed character major.
const nvidiaMajor = 195

// nvidiaNodes lists the device nodes for the GPUs' minors and, when the
// unified memory module is in, its two nodes.
func nvidiaNodes(minors []int, uvmMajor uint32, uvm bool) []nvidiaNode {
	out := []nvidiaNode{{"/dev/nvidiactl", nvidiaMajor, 255}}
	for _, m := range minors {
		out = append(out, nvidiaNode{fmt.Sprintf("/dev/nvidia%d", m), nvidiaMajor, uint32(m)})
	}
	if uvm {
		out = append(out, nvidiaNode{"/dev/nvidia-uvm", uvmMajor, 0}, nvidiaNode{"/dev/nvidia-uvm-tools", uvmMajor, 1})
	}
	return out
}
