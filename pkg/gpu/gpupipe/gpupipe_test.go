package gpupipe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/gpu"
)

// fakeSource is a Source with set answers.
type fakeSource struct {
	mu       sync.Mutex
	inv      []gpu.GPU
	health   []gpu.Health
	invErr   error
	watchErr error         // WatchXids returns it at once when set
	watched  chan struct{} // closed when WatchXids returned
}

var _ Source = (*fakeSource)(nil)

func newFake() *fakeSource {
	return &fakeSource{
		inv: []gpu.GPU{
			{Index: 0, UUID: "GPU-0", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Driver: "550.163.01", PCIBusID: "00000000:18:00.0"},
			{Index: 1, UUID: "GPU-1", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Driver: "550.163.01", PCIBusID: "00000000:2A:00.0", Minor: 1},
		},
		health: []gpu.Health{
			{UUID: "GPU-0", TemperatureC: 40, PowerW: 350, PowerLimitW: 700, Healthy: true},
			{UUID: "GPU-1", TemperatureC: 41, PowerW: 350, PowerLimitW: 700, Healthy: true},
		},
		watched: make(chan struct{}),
	}
}

func (f *fakeSource) Inventory() ([]gpu.GPU, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inv, f.invErr
}

func (f *fakeSource) Health() ([]gpu.Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]gpu.Health, len(f.health))
	for i, h := range f.health {
		h.Xids = append([]uint64(nil), h.Xids...)
		out[i] = h
	}
	return out, nil
}

func (f *fakeSource) WatchXids(ctx context.Context) error {
	defer close(f.watched)
	if f.watchErr != nil {
		return f.watchErr
	}
	<-ctx.Done()
	return nil
}

// xid records an Xid error for GPU i, as the Monitor's watch does.
func (f *fakeSource) xid(i int, x uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health[i].Xids = append(f.health[i].Xids, x)
	f.health[i].Evaluate(gpu.Limits{})
}

// pipes connects a Client to Serve over io.Pipes; the cleanup closes
// both and checks Serve's result.
func pipes(t *testing.T, src Source, opts ...Option) *Client {
	t.Helper()
	return pipesServing(t, src, nil, opts...)
}

func TestRoundTrip(t *testing.T) {
	src := newFake()
	c := pipes(t, src)
	inv, err := c.Inventory()
	if err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	if diff := cmp.Diff(src.inv, inv); diff != "" {
		t.Errorf("Inventory() differs (-want +got):\n%s", diff)
	}
	h, err := c.Health()
	if err != nil {
		t.Fatalf("Health() = %v", err)
	}
	if diff := cmp.Diff(src.health, h); diff != "" {
		t.Errorf("Health() differs (-want +got):\n%s", diff)
	}

	// An Xid recorded between two readings shows in the second.
	src.xid(1, 79)
	h, err = c.Health()
	if err != nil {
		t.Fatalf("Health() = %v", err)
	}
	if got := h[1]; !cmp.Equal(got.Xids, []uint64{79}) || got.Healthy {
		t.Errorf("Health()[1] = Xids %v, healthy %v, want [79], false", got.Xids, got.Healthy)
	}
}

func TestEmptyInventory(t *testing.T) {
	src := newFake()
	src.inv = nil
	inv, err := pipes(t, src).Inventory()
	if err != nil || len(inv) != 0 {
		t.Errorf("Inventory() = %v, %v, want no GPUs, nil", inv, err)
	}
}

func TestSourceError(t *testing.T) {
	src := newFake()
	src.invErr = errors.New("GPU 3: UUID: Unknown Error")
	c := pipes(t, src)
	if _, err := c.Inventory(); err == nil || err.Error() != "GPU helper: GPU 3: UUID: Unknown Error" {
		t.Errorf("Inventory() = %v, want the source's error", err)
	}
	// The source's error does not end the helper.
	if _, err := c.Health(); err != nil {
		t.Errorf("Health() after a source error = %v, want nil", err)
	}
}

func TestWatchError(t *testing.T) {
	src := newFake()
	src.watchErr = errors.New("creating an event set: Not Supported")
	c := pipes(t, src)
	<-src.watched
	if _, err := c.Health(); err != nil {
		t.Fatalf("Health() = %v", err)
	}
	err := c.WatchXids(t.Context())
	if want := "GPU helper: watching Xid errors: creating an event set: Not Supported"; err == nil || err.Error() != want {
		t.Errorf("WatchXids() = %v, want %q", err, want)
	}
}

func TestWatchXidsEndsWithContext(t *testing.T) {
	c := pipes(t, newFake())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.WatchXids(ctx); err != nil {
		t.Errorf("WatchXids(ended context) = %v, want nil", err)
	}
}

// helperSide is a hand-driven helper: the test reads its requests and
// writes its answers.
type helperSide struct {
	req *bufio.Reader
	ans *io.PipeWriter
}

func handDriven(t *testing.T, opts ...Option) (*Client, helperSide) {
	reqR, reqW := io.Pipe()
	ansR, ansW := io.Pipe()
	c := NewClient(ansR, reqW, opts...)
	t.Cleanup(func() { c.Close(); ansW.Close(); reqR.Close() })
	return c, helperSide{bufio.NewReader(reqR), ansW}
}

// answer reads one request and answers it with line, in the background.
func (h helperSide) answer(line string) {
	go func() {
		if _, err := h.req.ReadString('\n'); err != nil {
			return
		}
		h.ans.Write([]byte(line))
	}()
}

func TestHelperDiesMidRequest(t *testing.T) {
	c, h := handDriven(t)
	go func() {
		h.req.ReadString('\n')
		h.ans.Write([]byte(`{"gpus":[{"index":0,`)) // then dies
		h.ans.Close()
	}()
	_, err := c.Inventory()
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "GPU helper closed its output") {
		t.Fatalf("Inventory() from a dying helper = %v, want it closed its output", err)
	}
	if _, err2 := c.Health(); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("Health() after the helper died = %v, want %v", err2, err)
	}
	if err2 := c.WatchXids(t.Context()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("WatchXids() after the helper died = %v, want %v", err2, err)
	}
}

func TestHangingHelper(t *testing.T) {
	c, h := handDriven(t, WithStartTimeout(50*time.Millisecond))
	go h.req.ReadString('\n') // and never answers
	_, err := c.Health()
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "no answer to health within 50ms") {
		t.Fatalf("Health() from a hanging helper = %v, want %v", err, ErrTimeout)
	}
	if _, err := c.Inventory(); !errors.Is(err, ErrTimeout) {
		t.Errorf("Inventory() after a timeout = %v, want %v", err, ErrTimeout)
	}
}

func TestHelperNotReading(t *testing.T) {
	c, _ := handDriven(t, WithStartTimeout(50*time.Millisecond))
	if _, err := c.Inventory(); !errors.Is(err, ErrTimeout) {
		t.Errorf("Inventory() to a helper not reading = %v, want %v", err, ErrTimeout)
	}
}

func TestLaterRequestsTimeout(t *testing.T) {
	c, h := handDriven(t, WithTimeout(50*time.Millisecond))
	h.answer(`{"gpus":[]}` + "\n")
	if _, err := c.Inventory(); err != nil {
		t.Fatalf("Inventory() = %v", err)
	}
	go h.req.ReadString('\n')
	if _, err := c.Health(); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "within 50ms") {
		t.Errorf("Health() = %v, want %v after 50ms", err, ErrTimeout)
	}
}

func TestBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, op, line string
	}{
		{"not JSON", OpInventory, "Segmentation fault\n"},
		{"not an object", OpInventory, "[1,2]\n"},
		{"two objects", OpInventory, `{"gpus":[]} {"gpus":[]}` + "\n"},
		{"health for inventory", OpInventory, `{"health":[]}` + "\n"},
		{"inventory for health", OpHealth, `{"gpus":[]}` + "\n"},
		{"null result", OpHealth, `{"health":null}` + "\n"},
		{"empty object", OpHealth, "{}\n"},
		{"error and result", OpHealth, `{"health":[],"error":"x"}` + "\n"},
		{"wrong types", OpInventory, `{"gpus":[{"index":"zero"}]}` + "\n"},
		{"too long", OpInventory, `{"gpus":[` + strings.Repeat(" ", MaxLine) + "]}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, h := handDriven(t)
			h.answer(tc.line)
			var err error
			if tc.op == OpInventory {
				_, err = c.Inventory()
			} else {
				_, err = c.Health()
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("%s answered with %.40q = %v, want %v", tc.op, tc.line, err, ErrProtocol)
			}
			// The Client stopped the helper: no later answer is trusted.
			if _, err2 := c.Inventory(); !errors.Is(err2, ErrProtocol) {
				t.Errorf("Inventory() after a bad answer = %v, want %v", err2, ErrProtocol)
			}
		})
	}
}

func TestCloseEndsWatch(t *testing.T) {
	c, _ := handDriven(t)
	c.Close()
	if err := c.WatchXids(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("WatchXids() after Close = %v, want %v", err, ErrClosed)
	}
	if _, err := c.Health(); !errors.Is(err, ErrClosed) {
		t.Errorf("Health() after Close = %v, want %v", err, ErrClosed)
	}
}

func TestServeBadRequests(t *testing.T) {
	in := "garbage\n" + `{"op":"reboot"}` + "\n" + `{"op":"inventory"}`
	var out strings.Builder
	if err := Serve(t.Context(), newFake(), strings.NewReader(in+"\n"), &out); err != nil {
		t.Fatalf("Serve() = %v, want nil at the end of its input", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("Serve() answered %q, want 3 lines", lines)
	}
	if !strings.HasPrefix(lines[0], `{"error":"bad request: invalid character`) {
		t.Errorf("answer to garbage = %s, want a bad request", lines[0])
	}
	if want := `{"error":"bad request: unknown op \"reboot\""}`; lines[1] != want {
		t.Errorf("answer to an unknown op = %s, want %s", lines[1], want)
	}
	if !strings.HasPrefix(lines[2], `{"gpus":[{"index":0`) {
		t.Errorf("answer to inventory = %s", lines[2])
	}
}

func TestServeRequestTooLong(t *testing.T) {
	in := strings.Repeat("x", MaxLine+1) + "\n"
	if err := Serve(t.Context(), newFake(), strings.NewReader(in), io.Discard); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("Serve(long line) = %v, want %v", err, ErrLineTooLong)
	}
}

func TestServeEndsWithContext(t *testing.T) {
	src := newFake()
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, src, r, io.Discard) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve() = %v, want %v", err, context.Canceled)
	}
	select {
	case <-src.watched:
	default:
		t.Error("Serve returned before the Xid watch ended")
	}
}

func TestExitErrorNoDriver(t *testing.T) {
	for _, tc := range []struct {
		e    *ExitError
		want string
		none bool
	}{
		{&ExitError{Err: fmt.Errorf("exit status 3"), Code: ExitNoDriver, Stderr: "rigos-gpu: no driver"}, "GPU helper exited: exit status 3: rigos-gpu: no driver", true},
		{&ExitError{Err: fmt.Errorf("exit status 1"), Code: 1}, "GPU helper exited: exit status 1", false},
		{&ExitError{}, "GPU helper exited: exit status 0", false},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if got := errors.Is(tc.e, gpu.ErrNoDriver); got != tc.none {
			t.Errorf("errors.Is(%v, gpu.ErrNoDriver) = %v, want %v", tc.e, got, tc.none)
		}
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"gpus":[{"index":0,"uuid":"GPU-0","name":"NVIDIA H100","memory_bytes":85899345920}]}`,
		`{"health":[{"uuid":"GPU-0","temperature_c":40,"xids":[79],"healthy":false,"problems":["Xid 79"]}]}`,
		`{"error":"GPU 0: UUID: Unknown Error","watch_error":"x"}`,
		`{"gpus":[],"health":[]}`, `{}`, `null`, `[`, "\x00",
	} {
		f.Add(true, []byte(s))
		f.Add(false, []byte(s))
	}
	f.Fuzz(func(t *testing.T, inventory bool, line []byte) {
		op := OpHealth
		if inventory {
			op = OpInventory
		}
		r, err := decodeResponse(op, line)
		if err != nil {
			return
		}
		switch {
		case r.Error != "":
			if r.GPUs != nil || r.Health != nil {
				t.Errorf("decodeResponse(%q) = an error and a result", line)
			}
		case inventory && (r.GPUs == nil || r.Health != nil), !inventory && (r.Health == nil || r.GPUs != nil):
			t.Errorf("decodeResponse(%s, %q) = %+v, not the answer to %s", op, line, r, op)
		}
	})
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}
