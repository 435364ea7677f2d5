package gpu

import (
	"cmp"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Where the CDI specification mounts the user-space driver in a container.
const (
	// ContainerLibDir holds the libraries, each under its soname
	// (libcuda.so.1). It is one of the folders glibc's loader searches
	// on Debian and Ubuntu (the CUDA images' base) without an
	// ld.so.cache entry, so a program finds the driver with no hook run
	// in the container.
	ContainerLibDir = "/usr/lib/x86_64-linux-gnu"
	// ContainerBinDir holds the executables (nvidia-smi).
	ContainerBinDir = "/usr/bin"
)

// Folders of the user-space driver's folder (layout.NvidiaDir).
const (
	userLibDir = "lib"
	userBinDir = "bin"
)

// ErrNoUserSpace is returned (wrapped) by FindUserSpace when the folder is
// missing or holds no library: a CDI specification for the zero
// UserSpace gives containers the device nodes only, with which CUDA does
// not start.
var ErrNoUserSpace = errors.New("no NVIDIA user-space driver")

// UserSpace is the NVIDIA user-space driver the CDI specification mounts
// into containers: the libraries CUDA and NVML programs load (libcuda,
// libnvidia-ml, libnvidia-ptxjitcompiler and their siblings) and
// nvidia-smi. The zero UserSpace mounts nothing.
type UserSpace struct {
	// Libraries are the shared libraries, sorted by soname.
	Libraries []Library
	// Executables are the host paths of the executables, sorted.
	Executables []string
	// Skipped are the files FindUserSpace left out, each as "path: why"
	// (not an ELF file, not a shared object, no soname...), sorted, for
	// the caller to log.
	Skipped []string
}

// Library is one shared library of the user-space driver.
type Library struct {
	// Path is the library's path on the host.
	Path string
	// Soname is its DT_SONAME: the name programs ask the loader for, and
	// the name it is mounted under in ContainerLibDir.
	Soname string
}

// FindUserSpace reads the user-space driver in dir (on RigOS,
// layout.InSystem(layout.NvidiaDir)):
//   - dir/lib holds the libraries as real files, whatever their names
//     (libcuda.so.550.163.01): each regular file that is an x86-64 ELF
//     shared object with a DT_SONAME is a Library; other files, symbolic
//     links included, are listed in Skipped;
//   - dir/bin holds the executables: each regular file with an execute
//     bit; other files are listed in Skipped.
//
// A missing dir, or one with no library, gives the zero UserSpace and an
// error wrapping ErrNoUserSpace. Two libraries with one soname, a soname
// that is not a file name, and a file that starts like an ELF file but
// does not parse are errors: the image is broken.
//
// The files are trusted: dir is on the verified system partition, and
// debug/elf, which reads them, is not hardened against hostile input.
func FindUserSpace(dir string) (UserSpace, error) {
	var u UserSpace
	libDir := filepath.Join(dir, userLibDir)
	entries, err := os.ReadDir(libDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return UserSpace{}, err
	}
	owner := map[string]string{} // soname -> path
	for _, e := range entries {
		p := filepath.Join(libDir, e.Name())
		if !e.Type().IsRegular() {
			u.Skipped = append(u.Skipped, p+": not a regular file")
			continue
		}
		soname, why, err := readSoname(p)
		if err != nil {
			return UserSpace{}, fmt.Errorf("reading %s: %w", p, err)
		}
		if why != "" {
			u.Skipped = append(u.Skipped, p+": "+why)
			continue
		}
		if prev, dup := owner[soname]; dup {
			return UserSpace{}, fmt.Errorf("%s and %s both have soname %s", prev, p, soname)
		}
		owner[soname] = p
		u.Libraries = append(u.Libraries, Library{Path: p, Soname: soname})
	}
	if len(u.Libraries) == 0 {
		return UserSpace{}, fmt.Errorf("%w in %s: no shared library with a soname in %s (files left out: %d)",
			ErrNoUserSpace, dir, userLibDir, len(u.Skipped))
	}
	binDir := filepath.Join(dir, userBinDir)
	entries, err = os.ReadDir(binDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return UserSpace{}, err
	}
	for _, e := range entries {
		p := filepath.Join(binDir, e.Name())
		info, err := e.Info()
		if err != nil {
			return UserSpace{}, err
		}
		if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			u.Skipped = append(u.Skipped, p+": not an executable file")
			continue
		}
		u.Executables = append(u.Executables, p)
	}
	slices.SortFunc(u.Libraries, func(a, b Library) int { return cmp.Compare(a.Soname, b.Soname) })
	slices.Sort(u.Executables)
	slices.Sort(u.Skipped)
	return u, nil
}

// readSoname returns the DT_SONAME of the x86-64 ELF shared object at p,
// or why p is not one.
func readSoname(p string) (soname, why string, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var magic [len(elf.ELFMAG)]byte
	if _, err := f.ReadAt(magic[:], 0); err == io.EOF {
		return "", "not an ELF file", nil
	} else if err != nil {
		return "", "", err
	}
	if string(magic[:]) != elf.ELFMAG {
		return "", "not an ELF file", nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return "", "", err
	}
	if ef.Type != elf.ET_DYN {
		return "", fmt.Sprintf("not a shared object (%v)", ef.Type), nil
	}
	if ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64 {
		return "", fmt.Sprintf("built for %v %v, not x86-64", ef.Class, ef.Machine), nil
	}
	names, err := ef.DynString(elf.DT_SONAME)
	if err != nil {
		return "", "", fmt.Errorf("reading its soname: %w", err)
	}
	if len(names) == 0 {
		return "", "no soname", nil
	}
	soname = names[0]
	if soname == "" || soname == "." || soname == ".." || strings.ContainsAny(soname, "/\x00") {
		return "", "", fmt.Errorf("soname %q is not a file name", soname)
	}
	return soname, "", nil
}

// Mount options of the user-space driver's files in a container: a
// read-only bind mount, as nvidia-ctk makes them.
var userSpaceMountOptions = []string{"ro", "nosuid", "nodev", "bind"}

// The CDI specification (CDI 0.6.0), with the JSON names of
// tags.cncf.io/container-device-interface/specs-go, which containerd reads
// it with.
type (
	cdiSpec struct {
		Version        string      `json:"cdiVersion"`
		Kind           string      `json:"kind"`
		Devices        []cdiDevice `json:"devices"`
		ContainerEdits cdiEdits    `json:"containerEdits"`
	}
	cdiDevice struct {
		Name           string   `json:"name"`
		ContainerEdits cdiEdits `json:"containerEdits"`
	}
	cdiEdits struct {
		DeviceNodes []cdiNode  `json:"deviceNodes"`
		Mounts      []cdiMount `json:"mounts,omitempty"`
	}
	cdiNode struct {
		Path string `json:"path"`
	}
	cdiMount struct {
		HostPath      string   `json:"hostPath"`
		ContainerPath string   `json:"containerPath"`
		Options       []string `json:"options,omitempty"`
		Type          string   `json:"type,omitempty"`
	}
)

// CDI describes the GPUs for the Container Device Interface (CDI 0.6.0),
// as kind "nvidia.com/gpu":
//   - each GPU by index and by UUID, with its device node /dev/nvidiaN;
//   - for every GPU container, the control device nodes (/dev/nvidiactl,
//     /dev/nvidia-uvm, /dev/nvidia-uvm-tools) and read-only bind mounts
//     of the user-space driver: each library at ContainerLibDir/<soname>
//     and each executable at ContainerBinDir/<name>, sorted by container
//     path.
//
// The mounts are what `nvidia-ctk cdi generate` gives a container without
// its hooks: mounting each library under its soname stands in for the
// symbolic links and ld.so.cache update those hooks make, and RigOS runs
// no hook. Not served: a program that needs libcuda.so (no version),
// and an image whose loader does not search ContainerLibDir (Red
// Hat-based images search /usr/lib64). Device nodes carry only their
// path: the runtime reads type and numbers from the host's node.
func CDI(gpus []GPU, user UserSpace) ([]byte, error) {
	spec := cdiSpec{
		Version: "0.6.0", Kind: "nvidia.com/gpu",
		ContainerEdits: cdiEdits{DeviceNodes: []cdiNode{{"/dev/nvidiactl"}, {"/dev/nvidia-uvm"}, {"/dev/nvidia-uvm-tools"}}},
	}
	for _, l := range user.Libraries {
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, userSpaceMount(l.Path, path.Join(ContainerLibDir, l.Soname)))
	}
	for _, e := range user.Executables {
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, userSpaceMount(e, path.Join(ContainerBinDir, filepath.Base(e))))
	}
	slices.SortFunc(spec.ContainerEdits.Mounts, func(a, b cdiMount) int { return cmp.Compare(a.ContainerPath, b.ContainerPath) })
	for _, g := range gpus {
		e := cdiEdits{DeviceNodes: []cdiNode{{fmt.Sprintf("/dev/nvidia%d", g.Minor)}}}
		spec.Devices = append(spec.Devices, cdiDevice{Name: fmt.Sprint(g.Index), ContainerEdits: e}, cdiDevice{Name: g.UUID, ContainerEdits: e})
	}
	return json.MarshalIndent(spec, "", "  ")
}

func userSpaceMount(host, container string) cdiMount {
	return cdiMount{HostPath: host, ContainerPath: container, Options: slices.Clone(userSpaceMountOptions), Type: "bind"}
}
