package ociarchive

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The GPU check image holds everything the program needs but the GPU's
// driver: run from the image's files alone (its own loader, its own
// library folder), the program starts and says there is no driver here,
// rather than failing to load.
func TestGPUCheckImageIsSelfContained(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no C compiler: the GPU check needs cgo")
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "gpucheck.tar")
	if err := WriteGPUCheck(archive, GPUCheckName); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ManifestDigest(b); err != nil {
		t.Fatalf("archive: %v", err)
	}
	// The same files, unpacked, run.
	bin := filepath.Join(dir, "build", "gpucheck")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", bin, "../../gpucheck")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building gpucheck: %v: %s", err, out)
	}
	files, err := GPUCheckFiles(bin)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	var loader string
	for name, f := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(name, "ld-linux") {
			loader = p
		}
	}
	for _, lib := range glibcLibs {
		if _, ok := files[filepath.Join(libDir, lib)]; !ok {
			t.Errorf("image lacks %s", lib)
		}
	}
	if loader == "" {
		t.Fatalf("image has no loader: %v", keys(files))
	}
	run := exec.Command(loader, "--inhibit-cache", "--library-path", filepath.Join(root, libDir), filepath.Join(root, "gpucheck"))
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	err = run.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(out.String(), "libcuda") {
		t.Fatalf("gpucheck from the image's files: %v, output %q; want exit 3 naming libcuda (no driver on this machine)", err, out.String())
	}
}

func keys(m map[string]File) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
