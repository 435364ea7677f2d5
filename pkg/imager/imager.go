// Package imager builds a RigOS image, reproducibly: the same sources,
// kernel, keys and settings give the same bytes. It builds init and the
// agent, writes the initramfs (cpio), assembles and signs the UKI,
// writes the GPT disk as raw (for a USB stick) and qcow2 (for QEMU),
// predicts PCR 4 and PCR 11, and writes the signed reference manifest
// the verifier consumes.
package imager

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rigos/rigos/kernel"
	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/imager/cpio"
	"github.com/rigos/rigos/pkg/imager/disk"
	"github.com/rigos/rigos/pkg/imager/inputs"
	"github.com/rigos/rigos/pkg/imager/kmod"
	"github.com/rigos/rigos/pkg/imager/sbkeys"
	"github.com/rigos/rigos/pkg/imager/uki"
	"github.com/rigos/rigos/pkg/keyfile"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/layout/agentconfig"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/verity"
)

// Options for Build. Paths may be relative to the working directory.
type Options struct {
	// Out is the output folder. Required.
	Out string
	// Source is the RigOS module root (init and agent are built from it).
	Source string
	// Keys holds the Secure Boot keys (PK, KEK, db) and the manifest
	// signing key; missing development keys are generated. Required.
	Keys string
	// KernelRoot is the unpacked kernel package (kernel/fetch.sh). Required.
	KernelRoot string
	// Inputs is the unpacked root of the pinned Debian inputs
	// (pkg/imager/inputs/fetch.sh prints it): systemd-stub, mkfs.erofs
	// and its LZ4 library, static libseccomp for runc. Every file used is
	// checked against inputs.lock. Default is what fetch.sh, run from
	// Source, prints.
	Inputs string
	// Stub overrides the pinned systemd-stub; StubSHA256 (hex) is then
	// required and checked, and the manifest records the file's digest.
	// Default is the stub of the pinned systemd-boot-efi.
	Stub, StubSHA256 string
	// Verifier is the verifier's host:port baked into the agent. Required.
	Verifier string
	// VerifierCA is the CA (PEM file) of the verifier's TLS certificate. Required.
	VerifierCA string
	// NodeID is baked into the agent; empty means "derive from the EK".
	NodeID string
	// Console is the serial console ("ttyS0"), or empty for the screen.
	Console string
	// ExtraCmdline is appended to the hardened command line.
	ExtraCmdline []string
	// Network is init's network configuration. Default is DHCP.
	Network bootconfig.Network
	// Epoch is the build time recorded everywhere (SOURCE_DATE_EPOCH).
	// Default is 2026-01-01.
	Epoch int64
	// Plan is the supplier's ASK plan file (pkg/askplan), checked and
	// written to the ESP as RIGOS/plan.json (layout.ESPPlan). Optional: without one the
	// rig offers the whole machine. It is the supplier's to change after
	// flashing, so it is not part of the measured UKI.
	Plan string
	// CARoots is a PEM bundle of the certificate authorities the node
	// trusts for registries (hack/ca-roots.sh makes one from Debian's
	// pinned ca-certificates), placed on the measured system partition
	// at layout.CARoots. Optional: without it the node can pull only over
	// plain HTTP, and so never with credentials.
	CARoots string
	// NoMicrosoftDB leaves Microsoft's UEFI CA certificates out of the db
	// RigOS enrols into a firmware in Setup Mode. By default they are
	// kept: GPU and NIC option ROMs are signed with them, and boards show
	// no video or network without them.
	NoMicrosoftDB bool
	// Nvidia is the NVIDIA driver folder kernel/nvidia/build.sh prints:
	// its modules are signed with the db key and go, with the GSP
	// firmware, onto the system partition; init loads them on rigs with
	// an NVIDIA GPU. Optional: without it the image drives no GPU.
	Nvidia string
	// FakeGPUs is for test images only: their GPU helper reports
	// go-nvml's DGX H100 fake (eight H100s) and makes device nodes for
	// it (gpuhelper/fakegpu.go), so a VM without an NVIDIA GPU runs the
	// GPU path from the agent's CDI specification into a container. It
	// needs Nvidia. The helper's digest differs, so such an image is a
	// build of its own, and its manifest's inputs say "fake-gpus".
	FakeGPUs bool
	// InitrdHook, if set, may change the uncompressed initramfs (cpio)
	// before it is compressed into the UKI (tests build tampered images
	// with it).
	InitrdHook func([]byte) []byte
	// Log receives progress lines. Default is discard.
	Log io.Writer

	// Set by check.
	pinned    map[string]string // pinned input name → checked path
	goVersion string
}

// Result describes what Build wrote.
type Result struct {
	// UKI is slot A's UKI, UKIB slot B's (the same build, its command
	// line naming slot B).
	Raw, QCOW2, UKI, UKIB, Initrd, System, Manifest string
	// The UKIs' Authenticode digests and the PCR 11 values they leave.
	UKIDigest, PCR11, UKIBDigest, PCR11B []byte
	UKISize, InitrdSize, SystemSize      int
	// SystemOffset is where slot A's system partition starts in the raw
	// image.
	SystemOffset int64
	Build        string
}

func (o *Options) check() error {
	var errs []error
	req := func(name, v, hint string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required%s", name, hint))
		}
	}
	req("output folder", o.Out, "")
	req("keys folder", o.Keys, "")
	req("kernel", o.KernelRoot, " (run kernel/fetch.sh; it prints the folder)")
	req("verifier address", o.Verifier, "")
	req("verifier CA", o.VerifierCA, "")
	if err := o.checkInputs(); err != nil {
		errs = append(errs, err)
	}
	for _, tool := range []string{"objcopy", "qemu-img", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not found (hack/deps.sh installs it)", tool))
		}
	}
	if err := o.checkGo(); err != nil {
		errs = append(errs, err)
	}
	if o.VerifierCA != "" {
		if _, err := os.Stat(o.VerifierCA); err != nil {
			errs = append(errs, fmt.Errorf("verifier CA: %w", err))
		}
	}
	if o.CARoots != "" {
		if err := checkCARoots(o.CARoots); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Plan != "" {
		if b, err := os.ReadFile(o.Plan); err != nil {
			errs = append(errs, err)
		} else if _, err := askplan.Parse(b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.Plan, err))
		}
	}
	if o.Epoch == 0 {
		o.Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return errors.Join(errs...)
}

// binaries are the programs in the image, built from the module (their
// versions are pinned in go.mod). init goes into the initramfs, the rest
// into the system partition.
var binaries = []struct {
	name, pkg, tags, ldflags string
	cgo                      bool
}{
	// grpcnotrace leaves out gRPC's tracing (net/trace and its HTML
	// templates): 2.8 MB less agent.
	{name: "init", pkg: "./init", tags: "grpcnotrace", ldflags: "-s -w -buildid="},
	{name: "agent", pkg: "./agent", tags: "grpcnotrace", ldflags: "-s -w -buildid="},
	// containerd without CRI (no Kubernetes here), tracing or the
	// snapshotters RigOS does not use.
	{name: "containerd", pkg: "github.com/containerd/containerd/v2/cmd/containerd",
		tags: "grpcnotrace no_cri no_tracing no_btrfs no_devmapper no_zfs", ldflags: "-s -w -buildid="},
	{name: "containerd-shim-runc-v2", pkg: "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
		tags: "grpcnotrace", ldflags: "-s -w -buildid="},
	// runc needs cgo (nsenter) and libseccomp; linked statically.
	{name: "runc", pkg: "github.com/opencontainers/runc", tags: "seccomp netgo osusergo", cgo: true,
		ldflags: `-s -w -buildid= -extldflags "-static -Wl,--build-id=none"`},
}

// Build builds the image.
func Build(o Options) (*Result, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("imager: %w", err)
	}
	start := time.Now()
	step := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	tmp, err := os.MkdirTemp("", "rigos-imager-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	// go-diskfs stamps FAT entries with SOURCE_DATE_EPOCH.
	os.Setenv("SOURCE_DATE_EPOCH", fmt.Sprint(o.Epoch))

	keys, made, err := sbkeys.Ensure(o.Keys, "RigOS development")
	if err != nil {
		return nil, err
	}
	if made {
		step("generated development Secure Boot keys in %s", o.Keys)
	}
	manKey, err := ensureManifestKey(o.Keys)
	if err != nil {
		return nil, err
	}

	step("building init, agent, containerd, its runc shim and runc (static, reproducible)")
	bins, err := o.buildBinaries(tmp)
	if err != nil {
		return nil, err
	}
	release, err := kernelRelease(o.KernelRoot)
	if err != nil {
		return nil, err
	}
	modRoot := filepath.Join(o.KernelRoot, "lib", "modules", release)
	mods, err := kmod.Resolve(modRoot, kernel.Modules())
	if err != nil {
		return nil, fmt.Errorf("resolving modules: %w", err)
	}
	step("resolved %d modules (%d listed)", len(mods), len(kernel.Modules()))

	var extraDB []*x509.Certificate
	if !o.NoMicrosoftDB {
		if extraDB, err = sbkeys.MicrosoftUEFICAs(); err != nil {
			return nil, err
		}
	}
	enrol, err := sbkeys.Authenticated(keys, extraDB, time.Unix(o.Epoch, 0))
	if err != nil {
		return nil, err
	}
	var gpu *gpuDriver
	if o.FakeGPUs && o.Nvidia == "" {
		return nil, errors.New("fake GPUs need the NVIDIA driver folder (Nvidia): the fake stands in for NVML, not for the driver's files")
	}
	if o.Nvidia != "" {
		if gpu, err = o.gpuDriver(keys.DB, modRoot, tmp); err != nil {
			return nil, err
		}
		step("NVIDIA driver %s: %d modules signed with %s, %d files", gpu.config.Version, len(gpu.config.Modules), keys.DB.Cert.Subject.CommonName, len(gpu.files))
	}
	initrd, err := o.initramfs(bins, mods, modRoot, enrol, gpu)
	if err != nil {
		return nil, err
	}
	step("initramfs: %.1f MiB", float64(len(initrd))/(1<<20))

	system, tree, err := o.systemPartition(tmp, bins, gpu)
	if err != nil {
		return nil, err
	}
	step("system partition: %.1f MiB (EROFS and dm-verity tree, root %x…)", float64(len(system))/(1<<20), tree.Root[:6])

	u, err := o.buildUKI(tmp, release, initrd, tree, keys.DB, layout.SlotA)
	if err != nil {
		return nil, err
	}
	// Slot B's UKI differs only in the slot its measured command line
	// names: an update to this build writes it when the node runs from
	// slot A.
	ub, err := o.buildUKI(tmp, release, initrd, tree, keys.DB, layout.SlotB)
	if err != nil {
		return nil, err
	}
	step("UKIs for slots A and B: %.1f MiB each, signed with %s", float64(len(u.signed))/(1<<20), keys.DB.Cert.Subject.CommonName)

	sum := sha256.Sum256(u.signed)
	r := &Result{
		Raw: filepath.Join(o.Out, "rigos.raw"), QCOW2: filepath.Join(o.Out, "rigos.qcow2"),
		UKI: filepath.Join(o.Out, layout.BuildUKI(layout.SlotA)), Initrd: filepath.Join(o.Out, "initrd.img"),
		System: filepath.Join(o.Out, layout.BuildSystem), SystemSize: len(system),
		Manifest: filepath.Join(o.Out, layout.BuildManifest),
		UKIB:     filepath.Join(o.Out, layout.BuildUKI(layout.SlotB)), UKIDigest: u.digest, PCR11: u.pcr11, UKIBDigest: ub.digest, PCR11B: ub.pcr11,
		UKISize: len(u.signed), InitrdSize: len(initrd), Build: hex.EncodeToString(sum[:6]),
	}
	if err := o.writeImages(r, u.signed, initrd, system, sum[:]); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.UKIB, ub.signed, 0o644); err != nil {
		return nil, err
	}
	step("disk images: %s, %s", r.Raw, r.QCOW2)

	m, err := o.manifest(r, keys, extraDB, release, gpu)
	if err != nil {
		return nil, err
	}
	signedManifest, err := attestation.SignManifest(m, manKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.Manifest, signedManifest, 0o644); err != nil {
		return nil, err
	}
	step("manifest %s: build %s, PCR 4 %x…, PCR 11 %x…", r.Manifest, r.Build, u.digest[:6], u.pcr11[:6])
	return r, nil
}

// buildBinaries builds the image's programs (the binaries list),
// statically and reproducibly, in tmp.
func (o *Options) buildBinaries(tmp string, only ...string) (map[string][]byte, error) {
	bins := map[string][]byte{}
	for _, b := range binaries {
		if len(only) > 0 && !slices.Contains(only, b.name) {
			continue
		}
		out := filepath.Join(tmp, b.name)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-tags", b.tags,
			"-ldflags", b.ldflags, "-o", out, b.pkg)
		cmd.Dir = o.Source
		var err error
		if cmd.Env, err = o.goEnv(tmp, b.cgo); err != nil {
			return nil, err
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", out, err, b)
		}
		if bins[b.name], err = os.ReadFile(out); err != nil {
			return nil, err
		}
	}
	return bins, nil
}

// RuntimePrograms are the container runtime's programs in the image.
var RuntimePrograms = []string{"containerd", "containerd-shim-runc-v2", "runc"}

// BuildRuntime builds RuntimePrograms as Build builds them for the image
// (the pinned toolchain and libseccomp, the same tags and flags) from the
// module at source into dir, to run RigOS's container runtime outside an
// image (hack/gpu-check.sh).
func BuildRuntime(source, dir string) error {
	o := Options{Source: source}
	if err := errors.Join(o.checkInputs(), o.checkGo()); err != nil {
		return fmt.Errorf("imager: %w", err)
	}
	tmp, err := os.MkdirTemp("", "rigos-runtime-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins, err := o.buildBinaries(tmp, RuntimePrograms...)
	if err != nil {
		return err
	}
	for name, b := range bins {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// builtUKI is the signed UKI with what the boot will measure of it.
type builtUKI struct {
	signed []byte
	// digest is its Authenticode digest (PCR 4); pcr11 the PCR 11 value
	// systemd-stub's measurement of its sections leaves.
	digest, pcr11 []byte
}

// buildUKI assembles systemd-stub, the kernel, the command line (with the
// system partition's dm-verity root) and the initramfs, and signs the
// result with the db key.
func (o *Options) buildUKI(tmp, release string, initrd []byte, tree *verity.Tree, db sbkeys.Key, slot layout.Slot) (*builtUKI, error) {
	vmlinuz, err := os.ReadFile(filepath.Join(o.KernelRoot, "boot", "vmlinuz-"+release))
	if err != nil {
		return nil, fmt.Errorf("reading kernel (run kernel/fetch.sh): %w", err)
	}
	sections := []uki.Section{
		{Name: ".osrel", Data: osRelease(release)},
		{Name: ".cmdline", Data: []byte(o.cmdline(tree.Param(), slot))},
		{Name: ".linux", Data: vmlinuz},
		{Name: ".initrd", Data: initrd},
	}
	unsigned, err := uki.Assemble(o.Stub, sections, tmp)
	if err != nil {
		return nil, err
	}
	u := &builtUKI{pcr11: uki.PredictPCR11(sections)}
	if u.signed, err = uki.Sign(unsigned, db.Signer, db.Cert); err != nil {
		return nil, err
	}
	if u.digest, err = uki.AuthenticodeDigest(u.signed); err != nil {
		return nil, err
	}
	return u, nil
}

// writeImages writes the UKI, initramfs and system partition into Out,
// then the disk images (raw, and qcow2 for QEMU), their GUIDs derived
// from seed.
func (o *Options) writeImages(r *Result, signed, initrd, system, seed []byte) error {
	for _, f := range []string{r.Raw, r.QCOW2} {
		_ = os.Remove(f)
	}
	for path, b := range map[string][]byte{r.UKI: signed, r.Initrd: initrd, r.System: system} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	sizes := disk.Layout{Seed: seed}
	if o.Plan != "" {
		plan, err := os.ReadFile(o.Plan)
		if err != nil {
			return err
		}
		sizes.Files = map[string][]byte{"/" + layout.ESPPlan: plan}
	}
	var err error
	if r.SystemOffset, err = disk.Write(r.Raw, signed, system, sizes); err != nil {
		return err
	}
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", r.Raw, r.QCOW2).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img: %v: %s", err, b)
	}
	return nil
}

// manifest is the reference manifest of the build r: what a genuine boot
// of it measures, and the inputs it was built from.
func (o *Options) manifest(r *Result, keys *sbkeys.Set, extraDB []*x509.Certificate, release string, gpu *gpuDriver) (*attestation.Manifest, error) {
	// db may also hold what Setup Mode enrolment puts there beside
	// RigOS's key: certificates that sign option ROMs, never RigOS images.
	var otherDB []string
	for _, c := range extraDB {
		otherDB = append(otherDB, sbkeys.Fingerprint(c))
	}
	m := &attestation.Manifest{
		Version: attestation.ManifestVersion, Build: r.Build, Created: time.Unix(o.Epoch, 0).UTC(),
		// systemd-stub starts the kernel itself: the firmware measures only
		// the UKI into PCR 4.
		// Slot A's UKI, then slot B's.
		BootApplications: []string{hex.EncodeToString(r.UKIDigest), hex.EncodeToString(r.UKIBDigest)},
		PCR11:            []string{hex.EncodeToString(r.PCR11), hex.EncodeToString(r.PCR11B)},
		SecureBoot: attestation.SecureBootPolicy{Required: true, DBCerts: []string{sbkeys.Fingerprint(keys.DB.Cert)},
			KEKCerts: []string{sbkeys.Fingerprint(keys.KEK.Cert)}, OtherDBCerts: otherDB},
		Phases: measure.BootPhases,
	}
	var err error
	if m.Inputs, err = o.buildInputs(o.KernelRoot, release); err != nil {
		return nil, err
	}
	if gpu != nil {
		m.Inputs = append(m.Inputs, gpu.inputs...)
	}
	return m, nil
}

// checkCARoots refuses a CA bundle that holds no parsable certificate or
// anything but certificates.
func checkCARoots(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("CA roots: %w", err)
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("CA roots %s: a %s block; want certificates only", path, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("CA roots %s: certificate %d: %w", path, n+1, err)
		}
		n++
	}
	if n == 0 || len(bytes.TrimSpace(b)) > 0 {
		return fmt.Errorf("CA roots %s: want a PEM bundle of certificates (found %d, and %d bytes of something else)", path, n, len(bytes.TrimSpace(b)))
	}
	return nil
}

// cmdline returns the UKI's measured kernel command line: the hardened
// one, then the system partition's dm-verity parameter and the slot the
// UKI boots, then ExtraCmdline and Console.
// The root hash is measured with it, so changing one block of the
// system partition changes PCR 11 and the UKI digest; init opens the
// slot's partition.
func (o *Options) cmdline(systemParam string, slot layout.Slot) string {
	extra := append([]string{layout.SystemParam + "=" + systemParam, layout.SlotParam + "=" + string(slot)},
		o.ExtraCmdline...)
	if o.Console != "" {
		extra = append(extra, "console="+o.Console)
	}
	return kernel.Cmdline(extra...)
}

// systemPartition builds the read-only system partition: an EROFS file
// system (LZ4HC) with the agent, followed by its dm-verity hash tree.
// Large binaries live here rather than in the UKI, which the firmware and
// the boot stub hash several times while booting.
func (o *Options) systemPartition(tmp string, bins map[string][]byte, gpu *gpuDriver) ([]byte, *verity.Tree, error) {
	root := filepath.Join(tmp, "system")
	files := map[string][]byte{}
	if gpu != nil {
		maps.Copy(files, gpu.files)
	}
	for _, name := range layout.SystemBinaries {
		files[path.Join(layout.SystemBinDir, name)] = bins[name]
	}
	if o.CARoots != "" {
		b, err := os.ReadFile(o.CARoots)
		if err != nil {
			return nil, nil, err
		}
		files[layout.CARoots] = b
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			return nil, nil, err
		}
	}
	// Modes must not depend on the builder's umask: folders and the
	// executables (RigOS's, nvidia-smi) are 0755, data files (the CA
	// roots, modules, libraries, firmware) 0644.
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(root, p); !d.IsDir() && !strings.HasPrefix(rel, layout.SystemBinDir+"/") && (gpu == nil || !gpu.execs[filepath.ToSlash(rel)]) {
			return os.Chmod(p, 0o644)
		}
		return os.Chmod(p, 0o755)
	})
	if err != nil {
		return nil, nil, err
	}
	img := filepath.Join(tmp, "system.erofs")
	uuid := sha256.Sum256([]byte(fmt.Sprint(layout.SystemMapping, o.Epoch)))
	u := hex.EncodeToString(uuid[:16])
	// The pinned mkfs.erofs, with the pinned liblz4 (it decides the
	// compressed bytes); libc, libuuid and libselinux still come from the
	// host, and do not change the output.
	cmd := exec.Command(o.pinned[inputs.MkfsErofs], "-zlz4hc", fmt.Sprintf("-T%d", o.Epoch),
		"-U", u[0:8]+"-"+u[8:12]+"-"+u[12:16]+"-"+u[16:20]+"-"+u[20:32], "--all-root", "-x", "-1", img, root)
	cmd.Env = append(withoutEnv(os.Environ(), "LD_LIBRARY_PATH", "LD_PRELOAD"),
		"LD_LIBRARY_PATH="+filepath.Dir(o.pinned[inputs.LibLZ4]))
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("mkfs.erofs: %v: %s", err, b)
	}
	fs, err := os.ReadFile(img)
	if err != nil {
		return nil, nil, err
	}
	salt := sha256.Sum256(append([]byte("rigos-verity\x00"), fs...))
	tree, data := verity.Build(fs, salt[:])
	return append(data, tree.Hashes...), tree, nil
}

func osRelease(release string) []byte {
	return []byte(fmt.Sprintf("NAME=RigOS\nID=rigos\nPRETTY_NAME=\"RigOS\"\nVERSION_ID=dev\nKERNEL=%s\n", release))
}

// kernelRelease finds the kernel release in an unpacked kernel: the one
// folder under lib/modules (Debian's package, or kernel/build.sh output).
func kernelRelease(root string) (string, error) {
	dirs, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w (run kernel/fetch.sh)", root, err)
	}
	var rels []string
	for _, d := range dirs {
		if d.IsDir() {
			rels = append(rels, d.Name())
		}
	}
	if len(rels) != 1 {
		return "", fmt.Errorf("kernel %s: want one release under lib/modules, found %v", root, rels)
	}
	return rels[0], nil
}

func (o *Options) initramfs(bins map[string][]byte, mods []kmod.Module, modRoot string, enrol *sbkeys.AuthVariables, gpu *gpuDriver) ([]byte, error) {
	ca, err := os.ReadFile(o.VerifierCA)
	if err != nil {
		return nil, err
	}
	var modules []bootconfig.Module
	entries := []cpio.Entry{
		{Name: inInitramfs(layout.Init), Mode: cpio.TypeReg | 0o755, Data: bins["init"]},
		{Name: inInitramfs(layout.VerifierCA), Mode: cpio.TypeReg | 0o644, Data: ca},
		{Name: "dev/console", Mode: cpio.TypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
	}
	for _, d := range []string{"proc", "sys", "run", "tmp", "var"} {
		entries = append(entries, cpio.Entry{Name: d, Mode: cpio.TypeDir | 0o755})
	}
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(modRoot, m.Path))
		if err != nil {
			return nil, err
		}
		entries = append(entries, cpio.Entry{Name: filepath.Join(inInitramfs(layout.ModulesDir), m.Path), Mode: cpio.TypeReg | 0o644, Data: b})
		modules = append(modules, bootconfig.Module{Name: m.Name, Path: m.Path, Deps: m.Deps, Devices: m.Devices, Wanted: m.Wanted})
	}
	cfg := bootconfig.Config{Network: o.Network, Modules: modules, BuildTime: o.Epoch}
	if gpu != nil {
		cfg.GPU = gpu.config
	}
	initCfg, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	agentCfg, err := agentconfig.Encode(o.agentConfig())
	if err != nil {
		return nil, err
	}
	// cpio.Write orders the entries by name.
	for name, data := range map[string][]byte{
		layout.ContainerdConfig: []byte(ContainerdConfig),
		layout.InitConfig:       append(initCfg, '\n'),
		layout.AgentConfig:      agentCfg,
		// Signed payloads that enrol RigOS's keys into a firmware in
		// Setup Mode; part of the measured UKI.
		layout.SecureBootDB:  enrol.DB,
		layout.SecureBootKEK: enrol.KEK,
		layout.SecureBootPK:  enrol.PK,
	} {
		entries = append(entries, cpio.Entry{Name: inInitramfs(name), Mode: cpio.TypeReg | 0o644, Data: data})
	}
	var raw bytes.Buffer
	if err := cpio.Write(&raw, entries); err != nil {
		return nil, err
	}
	archive := raw.Bytes()
	if o.InitrdHook != nil {
		archive = o.InitrdHook(archive)
	}
	// zstd (the kernel's RD_ZSTD): smaller than gzip and faster to unpack.
	// One encoder thread keeps the output deterministic.
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(archive); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// inInitramfs is the name in the initramfs archive of the file at p on
// the booted system.
func inInitramfs(p string) string { return strings.TrimPrefix(p, "/") }

// agentConfig is the agent's configuration in the image.
func (o *Options) agentConfig() *agentconfig.Config {
	return &agentconfig.Config{
		NodeID: o.NodeID, Verifier: o.Verifier, CACert: layout.VerifierCA, TPM: "device",
		StateDir: layout.AgentStateDir, RuntimeLog: layout.RuntimeLog,
		Containerd: layout.ContainerdSocket, ScratchDir: layout.ScratchDir, Install: true,
	}
}

// ContainerdConfig is containerd's configuration in the image: its root
// on the encrypted state partition, its socket under /run, no CRI, and
// CDI specs (GPUs) from /run/cdi.
var ContainerdConfig = ContainerdConfigAt(ContainerdPaths{Root: layout.ContainerdRoot, State: layout.ContainerdState,
	Socket: layout.ContainerdSocket, TTRPCSocket: layout.ContainerdTTRPCSocket, CDIDir: layout.CDIDir})

// ContainerdPaths are where a containerd keeps its data and sockets.
type ContainerdPaths struct {
	Root, State, Socket, TTRPCSocket, CDIDir string
}

// ContainerdConfigAt is the image's containerd configuration with its
// folders and sockets at p: RigOS's containerd set up the same way
// outside an image (hack/gpu-check.sh).
func ContainerdConfigAt(p ContainerdPaths) string {
	return `version = 3
root = "` + p.Root + `"
state = "` + p.State + `"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.native",
]

[grpc]
  address = "` + p.Socket + `"
  uid = 0
  gid = 0

[ttrpc]
  address = "` + p.TTRPCSocket + `"

[plugins."io.containerd.cdi.v1.cdi"]
  spec_dirs = ["` + p.CDIDir + `"]
`
}

// ensureManifestKey loads (or, for development, creates) the Ed25519 key
// that signs manifests: manifest.key and manifest.pub beside the Secure
// Boot keys.
func ensureManifestKey(dir string) (ed25519.PrivateKey, error) {
	p := filepath.Join(dir, "manifest.key")
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		priv, pub, err := keyfile.NewEd25519()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, priv, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "manifest.pub"), pub, 0o644); err != nil {
			return nil, err
		}
	}
	return keyfile.ReadEd25519Private(p)
}
