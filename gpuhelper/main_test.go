package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

func TestFindNVML(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string // a name ending in "@" is a symbolic link
		want  string   // "" for an error
		none  bool     // the error is gpu.ErrNoDriver
	}{
		{"the image's", []string{"libnvidia-ml.so.550.163.01", "libcuda.so.550.163.01"}, "libnvidia-ml.so.550.163.01", false},
		{"links ignored", []string{"libnvidia-ml.so.550.163.01", "libnvidia-ml.so.1@"}, "libnvidia-ml.so.550.163.01", false},
		{"none", []string{"libcuda.so.550.163.01"}, "", true},
		{"only a link", []string{"libnvidia-ml.so.1@"}, "", true},
		{"two", []string{"libnvidia-ml.so.550.163.01", "libnvidia-ml.so.570.86.15"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				if l, ok := strings.CutSuffix(f, "@"); ok {
					if err := os.Symlink("elsewhere", filepath.Join(dir, l)); err != nil {
						t.Fatal(err)
					}
				} else if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := findNVML(dir)
			switch {
			case tc.want != "" && (err != nil || got != filepath.Join(dir, tc.want)):
				t.Errorf("findNVML(%v) = %q, %v, want %s", tc.files, got, err, tc.want)
			case tc.want == "" && err == nil:
				t.Errorf("findNVML(%v) = %q, want an error", tc.files, got)
			case tc.want == "" && errors.Is(err, gpu.ErrNoDriver) != tc.none:
				t.Errorf("findNVML(%v) = %v, want gpu.ErrNoDriver: %v", tc.files, err, tc.none)
			}
		})
	}
}

// A library that is not there is no driver (exit status 3), or, built
// without cgo, an error of its own.
func TestRunNoDriver(t *testing.T) {
	err := run(t.Context(), []string{"-nvml", filepath.Join(t.TempDir(), "libnvidia-ml.so.550.163.01")}, strings.NewReader(""), noStdout, slog.New(slog.DiscardHandler))
	want := gpu.ErrNoDriver
	if errNoCgo != nil {
		want = errNoCgo
	}
	if !errors.Is(err, want) {
		t.Errorf("run(-nvml missing) = %v, want %v", err, want)
	}
}

func TestRunUsage(t *testing.T) {
	if err := run(t.Context(), []string{"extra"}, strings.NewReader(""), noStdout, slog.New(slog.DiscardHandler)); !errors.Is(err, errUsage) {
		t.Errorf("run(extra) = %v, want %v", err, errUsage)
	}
}

func noStdout() (io.Writer, error) { return io.Discard, nil }

// The benchmark loads the one libcuda next to NVML, or the one -cuda
// names; with none, the benchmark fails and says why.
func TestBenchmarkLibrary(t *testing.T) {
	dir := t.TempDir()
	if _, err := benchmark("", dir)(t.Context()); !errors.Is(err, gpu.ErrNoDriver) || !strings.Contains(err.Error(), "no libcuda.so.* in "+dir) {
		t.Errorf("benchmark(no libcuda) = %v, want gpu.ErrNoDriver naming the folder", err)
	}
	for _, f := range []string{"libcuda.so.550.163.01", "libcuda.so.570.86.15"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := benchmark("", dir)(t.Context()); err == nil || !strings.Contains(err.Error(), "name one with -cuda") {
		t.Errorf("benchmark(two libcudas) = %v, want an error asking for -cuda", err)
	}
	missing := filepath.Join(dir, "missing", "libcuda.so.550.163.01")
	_, err := benchmark(missing, dir)(t.Context())
	if !errors.Is(err, gpucheck.ErrNoCgo) && (!errors.Is(err, gpucheck.ErrNoDriver) || !strings.Contains(err.Error(), missing)) {
		t.Errorf("benchmark(-cuda %s) = %v, want gpucheck.ErrNoDriver naming it", missing, err)
	}
}
