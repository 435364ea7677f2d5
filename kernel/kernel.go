// Package kernel describes the kernel RigOS boots: the pinned Debian
// package (kernel.lock, fetched by fetch.sh), the modules the image
// carries (modules.txt; their dependencies are resolved by the imager),
// and the hardened command line, each setting with its reason.
package kernel

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed kernel.lock
var lock string

//go:embed modules.txt
var modules string

// Lock is the pinned kernel package.
type Lock struct {
	Package, Version, SHA256, Release string
	// Suite is the Debian suite the package comes from ("trixie"); empty
	// means the build machine's own.
	Suite string
}

// Pinned returns the kernel.lock entry.
func Pinned() (Lock, error) {
	var l Lock
	for _, line := range strings.Split(lock, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "package":
			l.Package = v
		case "version":
			l.Version = v
		case "sha256":
			l.SHA256 = v
		case "release":
			l.Release = v
		case "suite":
			l.Suite = v
		}
	}
	if l.Package == "" || l.Version == "" || len(l.SHA256) != 64 || l.Release == "" {
		return l, fmt.Errorf("kernel.lock is incomplete: %+v", l)
	}
	return l, nil
}

// Modules returns the module names the image loads (without their
// dependencies), in the order of modules.txt.
func Modules() []string {
	var out []string
	for _, line := range strings.Split(modules, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if f := strings.TrimSpace(line); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Param is one kernel command-line setting.
type Param struct {
	Value  string
	Reason string
}

// Hardened is the command line every RigOS image boots with. It is
// measured into PCR 11 as part of the UKI, so it cannot be changed
// without the verifier noticing.
var Hardened = []Param{
	{"lockdown=confidentiality", "no way from userspace into kernel memory or secrets (kexec, /dev/mem, BPF reads, hibernation)"},
	{"module.sig_enforce=1", "only signed modules load: Debian's, signed by its build key, and RigOS's NVIDIA modules, signed by RigOS's db key (Debian's kernel trusts UEFI db for modules)"},
	{"iommu=force", "DMA always goes through the IOMMU"},
	{"intel_iommu=on", "enable the Intel IOMMU so devices cannot DMA into arbitrary memory"},
	{"amd_iommu=force_isolation", "give every device on AMD its own IOMMU domain"},
	{"efi=disable_early_pci_dma", "close the DMA window before the IOMMU is set up"},
	{"init_on_alloc=1", "zero memory on allocation: no stale data leaks between workloads"},
	{"init_on_free=1", "zero memory on free: secrets do not outlive their use"},
	{"slab_nomerge", "keep slab caches apart, which makes heap exploits harder"},
	{"page_alloc.shuffle=1", "randomise the page allocator"},
	{"randomize_kstack_offset=on", "randomise the kernel stack offset per system call"},
	{"pti=on", "kernel page-table isolation even on CPUs that report no Meltdown: user space never has the kernel mapped (costs some system-call time where it was off)"},
	{"proc_mem.force_override=never", "no writes through /proc/PID/mem to memory a process mapped read-only"},
	{"vsyscall=none", "remove the fixed-address vsyscall page"},
	{"debugfs=off", "no debugfs: it exposes kernel internals"},
	{"oops=panic", "an oops means the kernel may be compromised: stop"},
	{"panic=10", "reboot 10 s after a panic instead of hanging"},
	{"quiet", "the console shows RigOS status lines, not the kernel log"},
	{"loglevel=3", "only kernel errors reach the console"},
}

// Cmdline joins the hardened settings and extra (console and the like).
func Cmdline(extra ...string) string {
	parts := make([]string, 0, len(Hardened)+len(extra))
	for _, p := range Hardened {
		parts = append(parts, p.Value)
	}
	return strings.Join(append(parts, extra...), " ")
}
