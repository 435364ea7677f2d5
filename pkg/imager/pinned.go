package imager

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rigos/rigos/kernel"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/imager/inputs"
)

// checkInputs fetches (unless Inputs is given) and checks the pinned
// Debian inputs, and refuses a stub override without its digest.
func (o *Options) checkInputs() error {
	var errs []error
	switch {
	case o.Stub != "" && o.StubSHA256 == "":
		errs = append(errs, fmt.Errorf("systemd-stub %s given without its SHA-256 (-stub-sha256): an unpinned input makes an image nobody can rebuild", o.Stub))
	case o.Stub == "" && o.StubSHA256 != "":
		errs = append(errs, errors.New("a systemd-stub SHA-256 given without the stub (-stub)"))
	case o.Stub != "":
		if err := inputs.CheckFile(o.Stub, o.StubSHA256); err != nil {
			errs = append(errs, fmt.Errorf("systemd-stub: %w", err))
		}
	}
	if o.Inputs == "" {
		if o.Source == "" {
			return errors.Join(append(errs, fmt.Errorf("pinned inputs: no inputs folder and no source tree to run %s from", inputs.FetchScript))...)
		}
		root, err := inputs.Fetch(o.Source)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		o.Inputs = root
	}
	pinned, err := inputs.Check(o.Inputs)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	o.pinned = pinned
	if o.Stub == "" {
		o.Stub = pinned[inputs.Stub]
	}
	return errors.Join(errs...)
}

// checkGo refuses a Go toolchain other than the one go.mod's toolchain
// line names, and GOEXPERIMENT settings: either would change the binaries.
func (o *Options) checkGo() error {
	want, err := toolchain(filepath.Join(o.Source, "go.mod"))
	if err != nil {
		return err
	}
	env, err := o.goEnv("", false)
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "env", "GOVERSION", "GOEXPERIMENT")
	cmd.Dir, cmd.Env = o.Source, env
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go env: %w", err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "\n")
	if f[0] != want {
		return fmt.Errorf("go is %s, but go.mod pins toolchain %s: install %s (or run with GOTOOLCHAIN=%s): another Go builds different binaries", f[0], want, want, want)
	}
	if len(f) > 1 && strings.TrimSpace(f[1]) != "" {
		return fmt.Errorf("GOEXPERIMENT=%s is set: unset it (go env -u GOEXPERIMENT); it changes the binaries", strings.TrimSpace(f[1]))
	}
	o.goVersion = f[0]
	return nil
}

// toolchain is the "toolchain" line of the go.mod at p.
func toolchain(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("reading the toolchain pin: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "toolchain "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no toolchain line: the Go version is not pinned", p)
}

// goEnv is the environment the image's binaries are built in: the
// host's, less the settings that would change the output, plus fixed
// ones. With cgo, libseccomp's headers and static library come from the
// pinned inputs, through a pkg-config file written under tmp (runc's
// libseccomp binding asks pkg-config). The C compiler, linker and libc.a
// are still the host's.
func (o *Options) goEnv(tmp string, cgo bool) ([]string, error) {
	env := withoutEnv(os.Environ(), "GOFLAGS", "GOAMD64", "GOOS", "GOARCH", "CGO_ENABLED", "CC", "CXX",
		"CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_LDFLAGS", "PKG_CONFIG", "PKG_CONFIG_PATH",
		"PKG_CONFIG_LIBDIR", "PKG_CONFIG_SYSROOT_DIR", "LD_LIBRARY_PATH", "LD_PRELOAD")
	env = append(env, "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=-mod=readonly")
	if !cgo {
		return append(env, "CGO_ENABLED=0"), nil
	}
	lib, inc := o.pinned[inputs.LibseccompStatic], filepath.Join(o.Inputs, "usr", "include")
	pc := filepath.Join(tmp, "pkgconfig")
	if err := os.MkdirAll(pc, 0o755); err != nil {
		return nil, err
	}
	// Libs names the archive itself: one linker flag, as Debian's
	// "-lseccomp" is, so cgo's generated code (its line numbers are in
	// the binary) is the same as with the host's libseccomp-dev, and no
	// library search can pick the host's libseccomp.a.
	if err := os.WriteFile(filepath.Join(pc, "libseccomp.pc"), []byte(fmt.Sprintf(
		"Name: libseccomp\nDescription: pinned libseccomp (inputs.lock)\nVersion: pinned\nCflags: -I%s\nLibs: %s\n", inc, lib)), 0o644); err != nil {
		return nil, err
	}
	// The include path goes into CGO_CFLAGS as well: the go command's
	// build cache keys on CGO_CFLAGS, not on pkg-config's output, so a
	// package compiled earlier against the host's libseccomp would
	// otherwise be reused with the host's linker flags.
	return append(env, "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -I"+inc, "CGO_LDFLAGS=-O2 -g",
		"PKG_CONFIG_PATH="+pc, "PKG_CONFIG_LIBDIR="+pc), nil
}

// withoutEnv is env less the named variables.
func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// buildInputs lists what the image was built from, for the manifest.
func (o *Options) buildInputs(kernelRoot, release string) ([]attestation.BuildInput, error) {
	in := []attestation.BuildInput{{Name: "go", Version: o.goVersion}}
	file := func(name, p string) error {
		sum, err := inputs.FileSHA256(p)
		if err != nil {
			return err
		}
		in = append(in, attestation.BuildInput{Name: name, SHA256: sum})
		return nil
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := file(f, filepath.Join(o.Source, f)); err != nil {
			return nil, err
		}
	}
	pkgs, _, err := inputs.Pinned()
	if err != nil {
		return nil, err
	}
	stubOverride := o.StubSHA256 != ""
	for _, p := range pkgs {
		if p.Name == "systemd-boot-efi" && stubOverride {
			continue
		}
		in = append(in, attestation.BuildInput{Name: p.Name, Version: p.Version, SHA256: p.SHA256})
	}
	if stubOverride {
		in = append(in, attestation.BuildInput{Name: "systemd-stub", SHA256: strings.ToLower(o.StubSHA256)})
	}
	// The kernel package as pinned, when the kernel is the pinned one
	// (kernel/build.sh builds others), and always the kernel image itself.
	if k, err := kernel.Pinned(); err == nil && k.Release == release {
		in = append(in, attestation.BuildInput{Name: k.Package, Version: k.Version, SHA256: k.SHA256})
	}
	if err := file("vmlinuz", filepath.Join(kernelRoot, "boot", "vmlinuz-"+release)); err != nil {
		return nil, err
	}
	if o.CARoots != "" {
		if err := file("ca-roots", o.CARoots); err != nil {
			return nil, err
		}
	}
	return in, nil
}
