package gpupipe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/gpu"
)

// helperEnv makes the test binary a GPU helper (TestMain): its value
// says how it behaves.
const helperEnv = "GPUPIPE_HELPER"

// runHelper is the test binary as a helper; it returns the exit status.
func runHelper(mode string) int {
	switch mode {
	case "serve":
		if err := Serve(context.Background(), newFake(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		return 0
	case "nodriver":
		fmt.Fprintln(os.Stderr, "rigos-gpu: opening NVML")
		fmt.Fprintln(os.Stderr, "rigos-gpu:", gpu.ErrNoDriver)
		return ExitNoDriver
	case "die":
		// Answers the first request, dies on the second.
		in := bufio.NewScanner(os.Stdin)
		in.Scan()
		fmt.Println(`{"gpus":[]}`)
		in.Scan()
		fmt.Fprint(os.Stderr, "NVML: Unknown Error\nrigos-gpu: crashed")
		return 2
	case "hang":
		select {}
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 1
}

// startHelper starts the test binary as a helper behaving as mode.
func startHelper(t *testing.T, ctx context.Context, mode string, opts ...Option) (*Client, *bytes.Buffer) {
	t.Helper()
	t.Setenv(helperEnv, mode)
	var logs bytes.Buffer
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}, opts...)
	c, err := Start(ctx, os.Args[0], opts...)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, &logs
}

func TestStartServes(t *testing.T) {
	c, _ := startHelper(t, t.Context(), "serve")
	inv, err := c.Inventory()
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	if diff := cmp.Diff(newFake().inv, inv); diff != "" {
		t.Errorf("Inventory() differs (-want +got):\n%s", diff)
	}
	if _, err := c.Health(); err != nil {
		t.Errorf("Health() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if _, err := c.Health(); !errors.Is(err, ErrClosed) {
		t.Errorf("Health() after Close = %v, want %v", err, ErrClosed)
	}
}

func TestStartNoDriver(t *testing.T) {
	c, logs := startHelper(t, t.Context(), "nodriver")
	_, err := c.Inventory()
	if !errors.Is(err, gpu.ErrNoDriver) {
		t.Fatalf("Inventory() = %v, want %v", err, gpu.ErrNoDriver)
	}
	if want := "GPU helper exited: exit status 3: rigos-gpu: " + gpu.ErrNoDriver.Error(); err.Error() != want {
		t.Errorf("Inventory() = %q, want %q", err, want)
	}
	if !strings.Contains(logs.String(), "stderr=\"rigos-gpu: opening NVML\"") {
		t.Errorf("the helper's standard error was not logged:\n%s", logs)
	}
}

func TestStartHelperDies(t *testing.T) {
	c, _ := startHelper(t, t.Context(), "die")
	if _, err := c.Inventory(); err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	_, err := c.Health()
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Code != 2 || exit.Stderr != "rigos-gpu: crashed" {
		t.Fatalf("Health() = %v, want the helper's exit with status 2 and its last line", err)
	}
	if want := "GPU helper exited: exit status 2: rigos-gpu: crashed"; err.Error() != want {
		t.Errorf("Health() = %q, want %q", err, want)
	}
	for name, call := range map[string]func() error{
		"Inventory": func() error { _, err := c.Inventory(); return err },
		"WatchXids": func() error { return c.WatchXids(t.Context()) },
	} {
		if err2 := call(); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s() after the helper died = %v, want %v", name, err2, err)
		}
	}
}

func TestStartHangingHelper(t *testing.T) {
	c, _ := startHelper(t, t.Context(), "hang", WithStartTimeout(100*time.Millisecond))
	if _, err := c.Inventory(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Inventory() = %v, want %v", err, ErrTimeout)
	}
	// The Client killed the helper: its watch ends.
	if err := c.WatchXids(t.Context()); !errors.Is(err, ErrTimeout) {
		t.Errorf("WatchXids() = %v, want %v", err, ErrTimeout)
	}
}

func TestStartContextKills(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	c, _ := startHelper(t, ctx, "hang")
	cancel()
	var exit *ExitError
	if err := c.WatchXids(t.Context()); !errors.As(err, &exit) || exit.Code != -1 {
		t.Errorf("WatchXids() after the context ended = %v, want the helper killed", err)
	}
}

func TestStartMissingHelper(t *testing.T) {
	if _, err := Start(t.Context(), "/nonexistent/rigos-gpu"); err == nil {
		t.Error("Start(missing file) = nil error")
	}
}
