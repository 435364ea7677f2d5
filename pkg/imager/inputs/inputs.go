// Package inputs names the build inputs the imager takes from pinned
// Debian packages instead of the build host (inputs.lock, fetched and
// unpacked by fetch.sh), and checks the unpacked files against their
// pinned digests. It does not cover what the host still provides: the C
// compiler, linker and glibc (libc.a) that runc is linked with, the
// kernel headers libseccomp's header includes, and the shared C library
// mkfs.erofs runs on.
package inputs

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed inputs.lock
var lock string

// FetchScript is fetch.sh's path in the RigOS source tree.
const FetchScript = "pkg/imager/inputs/fetch.sh"

// Names of the pinned files (the second field of a "file" line).
const (
	Stub             = "systemd-stub"
	MkfsErofs        = "mkfs.erofs"
	LibLZ4           = "liblz4"
	LibseccompStatic = "libseccomp.a"
)

// Package is a pinned Debian package.
type Package struct {
	Name, Version string
	// SHA256 is the hex SHA-256 of the .deb.
	SHA256 string
}

// File is a file the imager uses from the unpacked packages.
type File struct {
	Name string
	// Path is relative to the unpacked root.
	Path string
	// SHA256 is the file's hex SHA-256.
	SHA256 string
}

// Pinned returns the packages and files of inputs.lock.
func Pinned() ([]Package, []File, error) {
	return parse(lock)
}

func parse(s string) ([]Package, []File, error) {
	var pkgs []Package
	var files []File
	var errs []error
	for i, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 4 || (f[0] != "deb" && f[0] != "file") || !isSHA256(f[3]) {
			errs = append(errs, fmt.Errorf("inputs.lock line %d: want \"deb NAME VERSION SHA256\" or \"file NAME PATH SHA256\": %q", i+1, line))
			continue
		}
		if f[0] == "deb" {
			pkgs = append(pkgs, Package{Name: f[1], Version: f[2], SHA256: f[3]})
		} else {
			files = append(files, File{Name: f[1], Path: f[2], SHA256: f[3]})
		}
	}
	return pkgs, files, errors.Join(errs...)
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && s == strings.ToLower(s)
}

// Fetch runs fetch.sh from the RigOS source tree at source and returns
// the unpacked root it prints.
func Fetch(source string) (string, error) {
	cmd := exec.Command(filepath.Join(source, FetchScript))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fetching pinned inputs (%s): %w\n%s", FetchScript, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}

// Check verifies every pinned file under root against its digest and
// returns their absolute paths by name. A missing or different file is
// an error naming it and both digests.
func Check(root string) (map[string]string, error) {
	_, files, err := Pinned()
	if err != nil {
		return nil, err
	}
	return check(root, files)
}

func check(root string, files []File) (map[string]string, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	var errs []error
	for _, f := range files {
		p := filepath.Join(abs, f.Path)
		if err := CheckFile(p, f.SHA256); err != nil {
			errs = append(errs, fmt.Errorf("pinned input %s: %w", f.Name, err))
			continue
		}
		paths[f.Name] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w (run %s again, or fix inputs.lock)", err, FetchScript)
	}
	return paths, nil
}

// FileSHA256 is the hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckFile reports whether the file at path has the hex SHA-256 want.
func CheckFile(path, want string) error {
	if !isSHA256(strings.ToLower(want)) {
		return fmt.Errorf("%s: %q is not a hex SHA-256 digest", path, want)
	}
	got, err := FileSHA256(path)
	if err != nil {
		return err
	}
	if got != strings.ToLower(want) {
		return fmt.Errorf("%s has SHA-256 %s, want %s", path, got, strings.ToLower(want))
	}
	return nil
}
