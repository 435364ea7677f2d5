package ociarchive

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// GPUCheckName is the default name of the GPU check image.
const GPUCheckName = "rigos.test/gpucheck:1"

// glibcLibs are the glibc libraries the image carries beside what the
// GPU check links: those CUDA's driver library (mounted in by the CDI
// spec, loaded at run time) links.
var glibcLibs = []string{"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"}

// libDir is where the image keeps its libraries: the first directory of
// glibc's own search path on Debian, so the loader finds them (and the
// libcuda.so.1 the CDI spec mounts beside them in
// /usr/lib/x86_64-linux-gnu) without an ld.so.cache.
const libDir = "lib/x86_64-linux-gnu"

// hostLibDirs are where the build machine's glibc is looked for.
var hostLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"}

// WriteGPUCheck builds the GPU check program (gpucheck/, cgo, linked
// dynamically against the build machine's glibc) and writes an image
// archive at path holding it, its loader and glibc: what a CUDA
// container needs besides the driver, which a GPU brings through CDI.
// Its entrypoint is /gpucheck.
func WriteGPUCheck(path, name string) error {
	tmp, err := os.MkdirTemp("", "rigos-gpucheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	data, err := buildProgram("./gpucheck", true)
	if err != nil {
		return fmt.Errorf("building the GPU check: %w", err)
	}
	bin := filepath.Join(tmp, "gpucheck")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		return err
	}
	files, err := GPUCheckFiles(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := Write(&buf, Image{Name: name, Files: files, Entrypoint: []string{"/gpucheck"}}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// GPUCheckFiles returns the image's files for the dynamically linked
// program bin: bin as /gpucheck, its loader at the path it names
// (PT_INTERP), and the libraries it and CUDA need in libDir.
func GPUCheckFiles(bin string) (map[string]File, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: reading its loader's name: %w", bin, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return nil, fmt.Errorf("%s is not dynamically linked", bin)
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	files := map[string]File{"gpucheck": {Mode: 0o755, Data: data}}
	if files[strings.TrimPrefix(interp, "/")], err = readFile(interp, 0o755); err != nil {
		return nil, err
	}
	for _, lib := range append(needed, glibcLibs...) {
		if strings.Contains(lib, "/") {
			return nil, fmt.Errorf("%s needs %q, a path, not a library name", bin, lib)
		}
		host, err := findLib(lib)
		if err != nil {
			return nil, err
		}
		if files[path.Join(libDir, lib)], err = readFile(host, 0o644); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func findLib(name string) (string, error) {
	for _, d := range hostLibDirs {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found in %v (is libc6 installed?)", name, hostLibDirs)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func readFile(p string, mode int64) (File, error) {
	b, err := os.ReadFile(p) // follows symbolic links: the image holds the file itself
	return File{Mode: mode, Data: b}, err
}
