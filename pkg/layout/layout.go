// Package layout is the RigOS image's layout in one place: the GPT
// partition names and the A/B system slots, where init mounts what, the runtime paths init and the
// agent share, the files the imager bakes into the initramfs and the
// system partition, and the executables a booted image holds. The
// imager writes the image from these names and init and the agent find
// their way around it with them, so a new path on the image is added
// here and nowhere else.
//
// The package is constants and a few pure functions over them: it
// imports nothing but the standard library, so init (which must stay
// small) links it freely.
package layout

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Partition names in the GPT, as the imager writes them and init finds
// them (the kernel's PARTNAME). The disk holds, in this order,
// RIGOS-ESP, RIGOS-SYSTEM-A, RIGOS-SYSTEM-B and RIGOS-STATE: two system
// partitions of the same size, one per Slot, and one ESP and one state
// partition that both slots share.
const (
	// ESPPartition is the EFI system partition: the UKIs and the
	// supplier's ASK plan.
	ESPPartition = "RIGOS-ESP"
	// StatePartition is the encrypted state partition, formatted on
	// first boot.
	StatePartition = "RIGOS-STATE"
)

// Slot names one of the two system slots, "a" or "b": a UKI and the
// system partition (an EROFS file system and its dm-verity hash tree)
// whose root hash that UKI's measured command line carries. The imager
// writes slot A and leaves slot B's partition empty; nothing switches
// slots yet.
type Slot string

// The slots.
const (
	SlotA Slot = "a"
	SlotB Slot = "b"
)

// Slots lists the slots in the order of their partitions on the disk.
func Slots() []Slot { return []Slot{SlotA, SlotB} }

// ParseSlot returns the slot that s, the value of SlotParam, names. Only
// "a" and "b" are slots: anything else is an error, never a default.
func ParseSlot(s string) (Slot, error) {
	switch sl := Slot(s); sl {
	case SlotA, SlotB:
		return sl, nil
	}
	return "", fmt.Errorf("unknown slot %q (want %q or %q)", s, SlotA, SlotB)
}

// SystemPartition returns the GPT name of the slot's read-only system
// partition: "RIGOS-SYSTEM-A" or "RIGOS-SYSTEM-B".
func SystemPartition(s Slot) string { return "RIGOS-SYSTEM-" + strings.ToUpper(string(s)) }

// Paths of the UKIs on the ESP, relative to its root.
const (
	// ESPBootUKI is the removable-media default path, the UKI the
	// firmware boots when no boot entry names another. The imager writes
	// slot A's UKI there.
	ESPBootUKI = "EFI/BOOT/BOOTX64.EFI"
	// ESPUKIDir holds each slot's UKI under its own name (SlotUKI).
	ESPUKIDir = "EFI/RIGOS"
)

// DefaultTrial is how long, in seconds, a trial boot of an update has to
// be trusted and committed (TrialParam).
const DefaultTrial = 15 * 60

// ExitReboot is the agent's exit status asking init to reboot the node
// (an install finished); init restarts an agent that exits otherwise.
const ExitReboot = 75

// EFIVarsDir is where efivarfs is mounted (read-only but while RigOS
// writes a variable).
const EFIVarsDir = "/sys/firmware/efi/efivars"

// SlotUKI returns the path of the slot's UKI on the ESP, relative to its
// root ("EFI/RIGOS/rigos-a.efi"), the file a boot entry for the slot
// names.
func SlotUKI(s Slot) string { return ESPUKIDir + "/rigos-" + string(s) + ".efi" }

// Files of a build's output folder, as the imager writes them. The
// folder is also the update bundle the verifier streams to nodes.
const (
	BuildManifest = "manifest.json"
	BuildSystem   = "system.img"
)

// BuildUKI returns the file name of the slot's UKI in a build's output
// folder: "rigos.efi" for slot A (the UKI the image boots), "rigos-b.efi"
// for slot B.
func BuildUKI(s Slot) string {
	if s == SlotA {
		return "rigos.efi"
	}
	return "rigos-" + string(s) + ".efi"
}

// Names init gives the partitions once it opened them.
const (
	// ESPLabel is the ESP's FAT volume label.
	ESPLabel = "RIGOS"
	// SystemMapping is the device-mapper name of the verified system
	// partition of the booted slot (/dev/mapper/rigos-system).
	SystemMapping = "rigos-system"
	// StateMapping is the device-mapper name of the decrypted state
	// partition.
	StateMapping = "rigos-state"
	// StateLabel is the ext4 volume name of the state file system.
	StateLabel = "rigos-state"
)

// Mount points on the booted system.
const (
	// SystemMount is where init mounts the verified system partition,
	// read-only.
	SystemMount = "/system"
	// StateMount is where init mounts the decrypted state partition:
	// containerd's content store and snapshots, and workloads' scratch
	// space.
	StateMount = "/var/lib/rigos"
	// ESPMount is where init mounts the EFI system partition, read-only:
	// the agent reads the supplier's ASK plan there.
	ESPMount = RunDir + "/esp"
	// CgroupRoot is where init mounts the cgroup v2 hierarchy.
	CgroupRoot = "/sys/fs/cgroup"
)

// Runtime paths: on the /run tmpfs, gone at the next boot.
const (
	// StateSeal is where init writes, as JSON, the values PCRs 7, 11 and
	// 15 held when it unlocked the state with a passphrase derived from
	// the volume key (statedisk.Passphrase): what an update seals the
	// passphrase for, with the next build's PCR 11. Absent, the state
	// cannot follow an update.
	StateSeal = RunDir + "/state-seal.json"
	// RunDir is RigOS's own folder under /run, and HOME of the services
	// init starts.
	RunDir = "/run/rigos"
	// RuntimeLog is the runtime event log (pkg/measure) init starts and
	// the agent appends to and sends.
	RuntimeLog = RunDir + "/runtime.cel"
	// ResolvConf is where init writes the DNS servers of a static
	// network configuration.
	ResolvConf = RunDir + "/resolv.conf"
	// DebugfsProbe is the folder init's self-check tries to mount
	// debugfs on.
	DebugfsProbe = RunDir + "/debugfs-probe"
	// AgentStateDir is the agent's state folder on the image (the
	// TPM-wrapped AK, kept for one boot).
	AgentStateDir = RunDir + "/agent"
	// ContainerdState is containerd's state folder.
	ContainerdState = "/run/containerd"
	// ContainerdSocket is containerd's gRPC socket.
	ContainerdSocket = ContainerdState + "/containerd.sock"
	// ContainerdTTRPCSocket is containerd's ttrpc socket.
	ContainerdTTRPCSocket = ContainerdSocket + ".ttrpc"
	// CDIDir holds the CDI specifications (the GPUs) the agent writes for
	// containerd.
	CDIDir = "/run/cdi"
)

// Paths on the state partition.
const (
	// ContainerdRoot holds containerd's content and snapshots. Workload
	// files there are executable only inside containers.
	ContainerdRoot = StateMount + "/containerd"
	// ScratchDir holds workloads' scratch space, wiped when they end.
	ScratchDir = StateMount + "/scratch"
)

// Files in the initramfs, where the booted system sees them.
const (
	// Init is init, the program the kernel starts as PID 1.
	Init = "/init"
	// ConfigDir holds the configurations the imager bakes.
	ConfigDir = "/etc/rigos"
	// InitConfig is init's configuration (pkg/bootconfig).
	InitConfig = ConfigDir + "/init.json"
	// AgentConfig is the agent's configuration (pkg/layout/agentconfig).
	AgentConfig = ConfigDir + "/agent.json"
	// ContainerdConfig is containerd's configuration.
	ContainerdConfig = ConfigDir + "/containerd.toml"
	// VerifierCA is the CA of the verifier's TLS certificate.
	VerifierCA = ConfigDir + "/verifier-ca.crt"
	// SecureBootDir holds the signed EFI variable payloads (db, KEK, PK)
	// init enrols when the firmware is in Setup Mode.
	SecureBootDir = ConfigDir + "/secureboot"
	SecureBootDB  = SecureBootDir + "/db.auth"
	SecureBootKEK = SecureBootDir + "/KEK.auth"
	SecureBootPK  = SecureBootDir + "/PK.auth"
	// ModulesDir holds the allowlisted kernel modules; a module's path
	// in pkg/bootconfig is relative to it.
	ModulesDir = "/lib/modules"
)

// Paths on the system partition, relative to its root (SystemMount).
const (
	// SystemBinDir holds the executables.
	SystemBinDir = "usr/bin"
	// NvidiaDir holds the NVIDIA user-space driver, when the image
	// carries one (InSystem(NvidiaDir) on the booted system): lib/ the
	// libraries, as real files named by their full version
	// (libcuda.so.550.163.01, no symbolic links), and bin/nvidia-smi. The
	// agent mounts them into GPU containers through the CDI specification
	// (pkg/gpu.FindUserSpace). Images built with the NVIDIA driver carry
	// it; their init configuration lists bin/nvidia-smi, the GPU helper
	// and glibc's loader as executables the self-check allows.
	NvidiaDir = "usr/lib/nvidia"
	// GPUHelper is the GPU helper (the gpuhelper program, installed as
	// rigos-gpu): dynamically linked with cgo against the glibc in
	// NvidiaDir/glibc, it reads the GPUs through the NVML in NvidiaDir/lib
	// for the static agent, which runs it (InSystem(GPUHelper) on the
	// booted system) when the image carries it (pkg/gpu/gpupipe). It sits
	// in libexec, not bin: the CDI spec mounts bin/ into containers.
	GPUHelper = NvidiaDir + "/libexec/rigos-gpu"
	// CARoots is the PEM bundle of the CA roots registries are verified
	// against, when the image carries one.
	CARoots = "etc/ssl/certs/ca-certificates.crt"
)

// Kernel command-line settings the imager writes into the measured UKI
// and init reads.
const (
	// SystemParam describes the system partition's dm-verity tree
	// (pkg/verity).
	SystemParam = "rigos.system"
	// SlotParam names the Slot the UKI belongs to ("rigos.slot=a"): init
	// opens that slot's system partition (SystemPartition) and checks it
	// against SystemParam. Every image sets it; init refuses to boot
	// without it.
	SlotParam = "rigos.slot"
	// TrialParam is how many seconds a trial boot of an update has to be
	// trusted and committed before init reboots into the old slot
	// (default DefaultTrial).
	TrialParam = "rigos.trial_timeout"
)

// ESPPlan is the supplier's ASK plan (pkg/askplan) on the ESP, relative
// to its root.
const ESPPlan = "RIGOS/plan.json"

// PlanFile is where the booted system reads the supplier's ASK plan.
const PlanFile = ESPMount + "/" + ESPPlan

// SystemBinaries are the executables on the system partition, in
// SystemBinDir, sorted: the agent, containerd, its runc shim and runc.
// Nothing else on the image is executable but Init.
var SystemBinaries = []string{"agent", "containerd", "containerd-shim-runc-v2", "runc"}

// InSystem returns where the file at rel on the system partition is on
// the booted system.
func InSystem(rel string) string { return path.Join(SystemMount, rel) }

// SystemBinary returns the path of the system partition's executable
// name on the booted system ("/system/usr/bin/agent").
func SystemBinary(name string) string { return InSystem(path.Join(SystemBinDir, name)) }

// SystemPath is PATH for the services init starts.
const SystemPath = SystemMount + "/" + SystemBinDir

// Executables lists, sorted, every executable file of a booted image
// outside the workloads' containers: Init and the SystemBinaries.
func Executables() []string {
	out := []string{Init}
	for _, b := range SystemBinaries {
		out = append(out, SystemBinary(b))
	}
	slices.Sort(out)
	return out
}
