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
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return err
	}
	dir := filepath.Dir(strings.TrimSpace(string(root)))
	tmp, err := os.MkdirTemp("", "rigos-workload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "workload")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", bin, "./hack/workload")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the workload: %v: %s", err, b)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := Write(&buf, Image{Name: name, Files: map[string]File{"workload": {Mode: 0o755, Data: data}}, Entrypoint: []string{"/workload"}}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
