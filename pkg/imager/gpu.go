package imager

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/imager/kmod"
	"github.com/rigos/rigos/pkg/imager/sbkeys"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/modsig"
)

// Where the NVIDIA driver goes on the system partition.
const (
	gpuModulesDir  = "lib/modules/nvidia"
	gpuFirmwareDir = "lib/firmware" // the kernel looks for nvidia/VERSION/gsp_*.bin here
	// gpuKernelDepsDir holds the kernel's modules the driver depends on.
	gpuKernelDepsDir = "lib/modules/nvidia-deps"
)

// nvidiaVendor is the modalias prefix of NVIDIA's PCI devices.
const nvidiaVendor = "pci:v000010DE"

// gpuDriver is the NVIDIA driver as it goes into an image.
type gpuDriver struct {
	files  map[string][]byte // system partition path → contents
	execs  map[string]bool   // the files among them that are executable
	config *bootconfig.GPU
	inputs []attestation.BuildInput
}

// gpuDriver reads the folder kernel/nvidia/build.sh prints (modules/,
// firmware/, VERSION, nvidia.lock), signs each module with the db key
// (Debian's kernel trusts db for modules; nothing else RigOS boots is
// signed with a key the kernel trusts for NVIDIA's modules), and lays
// modules and GSP firmware out for the system partition.
func (o *Options) gpuDriver(db sbkeys.Key, modRoot, tmp string) (*gpuDriver, error) {
	dir := o.Nvidia
	v, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil {
		return nil, fmt.Errorf("NVIDIA driver folder %s: %w (run kernel/nvidia/build.sh; it prints the folder)", dir, err)
	}
	g := &gpuDriver{files: map[string][]byte{}, execs: map[string]bool{}, config: &bootconfig.GPU{Version: strings.TrimSpace(string(v))}}
	paths, err := filepath.Glob(filepath.Join(dir, "modules", "*.ko"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("NVIDIA driver folder %s holds no modules/*.ko", dir)
	}
	mods := map[string]bootconfig.Module{}
	for _, p := range paths {
		info, err := kmod.Modinfo(p)
		if err != nil {
			return nil, err
		}
		name := kmod.Canonical(strings.TrimSuffix(filepath.Base(p), ".ko"))
		m := bootconfig.Module{Name: name, Path: path.Join(gpuModulesDir, filepath.Base(p)), Wanted: true}
		for _, d := range info["depends"] {
			for _, dep := range strings.Split(d, ",") {
				if dep = strings.TrimSpace(dep); dep != "" {
					m.Deps = append(m.Deps, kmod.Canonical(dep))
				}
			}
		}
		for _, a := range info["alias"] {
			if strings.HasPrefix(strings.ToUpper(a), strings.ToUpper(nvidiaVendor)) {
				m.Devices = append(m.Devices, a)
			}
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		signed, err := modsig.Sign(raw, db.Signer, db.Cert)
		if err != nil {
			return nil, fmt.Errorf("signing %s: %w", filepath.Base(p), err)
		}
		s, err := modsig.ReadSigner(signed)
		if err != nil {
			return nil, err
		}
		g.config.Signer = s.String()
		g.files[m.Path] = signed
		mods[name] = m
	}
	// The kernel's own modules the driver needs (nvidia needs drm) come
	// with it, as Debian signed them; they load only as dependencies.
	var kdeps []string
	for _, m := range mods {
		for _, d := range m.Deps {
			if _, ours := mods[d]; !ours {
				kdeps = append(kdeps, d)
			}
		}
	}
	sort.Strings(kdeps)
	var deps []bootconfig.Module
	if len(kdeps) > 0 {
		resolved, err := kmod.Resolve(modRoot, slices.Compact(kdeps))
		if err != nil {
			return nil, fmt.Errorf("the NVIDIA modules' kernel dependencies: %w", err)
		}
		for _, k := range resolved {
			b, err := os.ReadFile(filepath.Join(modRoot, k.Path))
			if err != nil {
				return nil, err
			}
			p := path.Join(gpuKernelDepsDir, filepath.ToSlash(k.Path))
			g.files[p] = b
			deps = append(deps, bootconfig.Module{Name: k.Name, Path: p, Deps: k.Deps})
			mods[k.Name] = bootconfig.Module{Name: k.Name} // known, drives nothing
		}
	}
	order, err := gpuLoadOrder(mods, deps)
	if err != nil {
		return nil, err
	}
	g.config.Modules = append(deps, order...)
	fw := filepath.Join(dir, "firmware")
	err = filepath.WalkDir(fw, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(fw, p)
		g.files[path.Join(gpuFirmwareDir, filepath.ToSlash(rel))] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("NVIDIA firmware: %w", err)
	}
	if err := g.addUserSpace(filepath.Join(dir, "user")); err != nil {
		return nil, err
	}
	helper, err := o.buildGPUHelper(tmp)
	if err != nil {
		return nil, err
	}
	g.files[gpuHelperPath] = helper
	g.addExecutable(gpuHelperPath)
	if g.inputs, err = nvidiaInputs(filepath.Join(dir, "nvidia.lock")); err != nil {
		return nil, err
	}
	if o.FakeGPUs {
		sum := sha256.Sum256(helper)
		g.inputs = append(g.inputs, attestation.BuildInput{Name: "fake-gpus", SHA256: hex.EncodeToString(sum[:])})
	}
	return g, nil
}

// gpuLoadOrder puts NVIDIA's modules in dependency order (the kernel
// modules in deps come before all of them). A module that drives no
// device of its own (nvidia_uvm) loads with the GPU module it depends
// on: it takes that module's device aliases.
func gpuLoadOrder(mods map[string]bootconfig.Module, deps []bootconfig.Module) ([]bootconfig.Module, error) {
	var names []string
	done := map[string]bool{}
	for _, d := range deps {
		done[d.Name] = true
	}
	for n := range mods {
		if !done[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []bootconfig.Module
	var visit func(n string, depth int) error
	visit = func(n string, depth int) error {
		if done[n] {
			return nil
		}
		m, ok := mods[n]
		if !ok {
			return fmt.Errorf("NVIDIA module dependency %s is not in the driver folder", n)
		}
		if depth > len(mods) {
			return fmt.Errorf("NVIDIA modules depend on each other in a cycle (%s)", n)
		}
		for _, d := range m.Deps {
			if err := visit(d, depth+1); err != nil {
				return err
			}
			if len(m.Devices) == 0 {
				m.Devices = mods[d].Devices
			}
		}
		if len(m.Devices) == 0 {
			return fmt.Errorf("NVIDIA module %s drives no NVIDIA device and depends on none that does", n)
		}
		mods[n] = m
		done[n] = true
		out = append(out, m)
		return nil
	}
	for _, n := range names {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// nvidiaInputs reads the .debs the driver was built from out of the
// nvidia.lock build.sh copies beside the modules, for the manifest.
func nvidiaInputs(lock string) ([]attestation.BuildInput, error) {
	b, err := os.ReadFile(lock)
	if err != nil {
		return nil, fmt.Errorf("NVIDIA driver folder: %w (rebuild it with kernel/nvidia/build.sh)", err)
	}
	var in []attestation.BuildInput
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && (f[0] == "deb" || f[0] == "user" || f[0] == "glibc") {
			in = append(in, attestation.BuildInput{Name: f[1], Version: f[2], SHA256: f[3]})
		}
	}
	return in, nil
}

// addUserSpace puts the user-space driver (user/lib, user/bin) in
// layout.NvidiaDir, where the CDI spec mounts it into containers from,
// and glibc for the GPU helper (user/glibc) beside it.
func (g *gpuDriver) addUserSpace(dir string) error {
	for _, sub := range []string{"lib", "bin", "glibc"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return fmt.Errorf("NVIDIA user space: %w (rebuild the driver folder with kernel/nvidia/build.sh)", err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return err
			}
			p := path.Join(layout.NvidiaDir, sub, e.Name())
			g.files[p] = b
			// The loader must be executable: the kernel opens a program's
			// interpreter for execution.
			if sub == "bin" || p == gpuHelperInterp {
				g.addExecutable(p)
			}
		}
	}
	return nil
}

func (g *gpuDriver) addExecutable(p string) {
	g.execs[p] = true
	g.config.Executables = append(g.config.Executables, layout.InSystem(p))
	sort.Strings(g.config.Executables)
}

// The GPU helper (gpuhelper/, installed as rigos-gpu) is the one
// dynamically linked program outside containers: it loads NVML for the
// static agent. Its loader and libraries are the pinned glibc in
// layout.NvidiaDir/glibc, named in the binary itself (interpreter and
// DT_RPATH, which also covers what NVML, loaded later, needs), so
// nothing on the host's root is involved.
var (
	gpuHelperPath   = layout.GPUHelper
	gpuHelperInterp = path.Join(layout.NvidiaDir, "glibc", "ld-linux-x86-64.so.2")
)

// buildGPUHelper builds the helper with cgo against the build machine's
// glibc headers and links it to run on the image's glibc.
func (o *Options) buildGPUHelper(tmp string) ([]byte, error) {
	out := filepath.Join(tmp, "rigos-gpu")
	ldflags := fmt.Sprintf("-s -w -buildid= -linkmode=external -extldflags '-Wl,--dynamic-linker=%s -Wl,--disable-new-dtags -Wl,-rpath,%s -Wl,--build-id=none'",
		layout.InSystem(gpuHelperInterp), layout.InSystem(path.Dir(gpuHelperInterp)))
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out}
	if o.FakeGPUs {
		args = append(args, "-tags", "rigos_fakegpu")
	}
	cmd := exec.Command("go", append(args, "./gpuhelper")...)
	cmd.Dir = o.Source
	var err error
	if cmd.Env, err = o.goEnv(tmp, true); err != nil {
		return nil, err
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the GPU helper: %v\n%s", err, b)
	}
	return os.ReadFile(out)
}
