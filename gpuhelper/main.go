// Command gpuhelper is the GPU helper, installed in an image as
// layout.GPUHelper (rigos-gpu): a small program, built with cgo and
// dynamically linked, that reads the NVIDIA GPUs through the image's
// NVML (libnvidia-ml) for the agent, which is static and built without
// cgo. The agent runs it and asks over its standard input and output
// (pkg/gpu/gpupipe); it logs to its standard error.
//
// It opens NVML from -nvml, by default the one libnvidia-ml.so.* file
// in the image's NVIDIA library folder, and serves until its standard
// input ends or it gets SIGTERM. It answers benchmark requests with the
// GPU check (pkg/gpu/gpucheck) on the libcuda from -cuda, by default the
// one libcuda.so.* file in the NVML's folder; without one there, those
// requests get an error and the rest is served as before.
//
// Exit status: 0 when the agent went away; 3 (gpupipe.ExitNoDriver)
// when NVML finds no NVIDIA driver; 2 for bad usage; 1 otherwise,
// including a build without cgo, which cannot load NVML.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
	"github.com/rigos/rigos/pkg/gpu/gpupipe"
	"github.com/rigos/rigos/pkg/layout"
)

const exitUsage = 2

var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Stdin, protocolOut, log)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), errors.Is(err, context.Canceled):
		return
	case errors.Is(err, errUsage):
		os.Exit(exitUsage)
	}
	// The agent reports the last line.
	fmt.Fprintln(os.Stderr, "rigos-gpu:", err)
	if errors.Is(err, gpu.ErrNoDriver) {
		os.Exit(gpupipe.ExitNoDriver)
	}
	os.Exit(1)
}

// run serves the agent on stdin and the writer stdout returns, which it
// calls before it loads NVML.
func run(ctx context.Context, args []string, stdin io.Reader, stdout func() (io.Writer, error), log *slog.Logger) error {
	fs := flag.NewFlagSet("rigos-gpu", flag.ContinueOnError)
	lib := fs.String("nvml", "", "the NVML library to load (default: the one libnvidia-ml.so.* in "+nvidiaLib+")")
	cuda := fs.String("cuda", "", "the libcuda the benchmark loads (default: the one libcuda.so.* in the NVML library's folder)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "rigos-gpu: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if errNoCgo != nil {
		return errNoCgo
	}
	if *lib == "" {
		var err error
		if *lib, err = findNVML(nvidiaLib); err != nil {
			return err
		}
	}
	bench := benchmark(*cuda, filepath.Dir(*lib))
	out, err := stdout()
	if err != nil {
		return fmt.Errorf("setting up the answers' pipe: %w", err)
	}
	mon, err := openNVML(*lib)
	if err != nil {
		return fmt.Errorf("%s: %w", *lib, err)
	}
	defer mon.Close()
	log.Info("serving the agent", "nvml", *lib, "cuda", *cuda)
	return gpupipe.Serve(ctx, mon, stdin, out, gpupipe.WithBenchmark(bench))
}

// benchmark is the GPU check on the libcuda at cuda, or, when cuda is
// "", on the one in dir. It looks for the library when asked, so a
// missing one fails the benchmark only.
func benchmark(cuda, dir string) gpupipe.BenchmarkFunc {
	return func(ctx context.Context) ([]gpucheck.Result, error) {
		lib := cuda
		if lib == "" {
			var err error
			if lib, err = findLib(dir, "libcuda.so.*", "-cuda"); err != nil {
				return nil, err
			}
		}
		return gpucheck.Run(ctx, gpucheck.Options{Library: lib})
	}
}

// nvidiaLib is the image's folder of NVIDIA libraries.
var nvidiaLib = layout.InSystem(layout.NvidiaDir) + "/lib"

// findNVML returns the one NVML library in dir: a regular file named
// libnvidia-ml.so.VERSION (the image names libraries by their full
// version and has no symbolic links). None is gpu.ErrNoDriver.
func findNVML(dir string) (string, error) { return findLib(dir, "libnvidia-ml.so.*", "-nvml") }

// findLib returns the one regular file in dir matching pattern; flag is
// the option that names one instead. None is gpu.ErrNoDriver.
func findLib(dir, pattern, flag string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no %s in %s: %w", pattern, dir, gpu.ErrNoDriver)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("more than one %s in %s: %q; name one with %s", pattern, dir, found, flag)
}
