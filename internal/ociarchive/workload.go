package ociarchive

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// WorkloadName is the default name of the test workload image.
const WorkloadName = "rigos.test/workload:1"

// WriteWorkload builds hack/workload (static, reproducible) and writes
// it as an image archive at path, its entrypoint /workload.
func WriteWorkload(path, name string) error {
	data, err := buildProgram("./hack/workload", false)
	if err != nil {
		return fmt.Errorf("building the workload: %w", err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, Image{Name: name, Files: map[string]File{"workload": {Mode: 0o755, Data: data}}, Entrypoint: []string{"/workload"}}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// buildProgram builds the module's package pkg for linux/amd64 (cgo
// with the build machine's C library when cgo is set, else static) and
// returns the binary.
func buildProgram(pkg string, cgo bool) ([]byte, error) {
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "rigos-ociarchive-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "program")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", bin, pkg)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), fmt.Sprintf("CGO_ENABLED=%d", map[bool]int{false: 0, true: 1}[cgo]), "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, b)
	}
	return os.ReadFile(bin)
}
