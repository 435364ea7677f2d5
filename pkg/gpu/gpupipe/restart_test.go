package gpupipe

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// A helper that dies is started again once the backoff has passed: the
// call that finds it gone says why, a later one gets answers from the
// new helper.
func TestRestartingStartsAGoneHelperAgain(t *testing.T) {
	var mu sync.Mutex
	var kills []func()
	start := func() (*Client, error) {
		reqR, reqW := io.Pipe()
		ansR, ansW := io.Pipe()
		src := newFake() // each helper serves its own
		go func() { Serve(t.Context(), src, reqR, ansW); ansW.Close() }()
		c := NewClient(ansR, reqW)
		mu.Lock()
		kills = append(kills, func() { ansW.CloseWithError(io.ErrUnexpectedEOF); reqR.Close() })
		mu.Unlock()
		t.Cleanup(func() { c.Close(); ansW.Close(); reqR.Close() })
		return c, nil
	}
	r, err := NewRestarting(start, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	r.started = now
	if inv, err := r.Inventory(); err != nil || len(inv) != 2 {
		t.Fatalf("Inventory() = %v, %v", inv, err)
	}
	mu.Lock()
	kills[0]() // the helper crashes
	mu.Unlock()
	if _, err := r.Health(); err == nil {
		t.Fatal("Health() from a dead helper succeeded")
	}
	_, err = r.Health()
	if err == nil || !strings.Contains(err.Error(), "starting it again in 1m0s") {
		t.Fatalf("Health() within the backoff = %v, want it to say when the helper starts again", err)
	}
	if r.Starts() != 1 {
		t.Fatalf("started %d times within the backoff, want 1", r.Starts())
	}
	now = now.Add(time.Minute)
	if h, err := r.Health(); err != nil || len(h) != 2 {
		t.Fatalf("Health() after the backoff = %v, %v; want answers from a new helper", h, err)
	}
	if r.Starts() != 2 {
		t.Fatalf("started %d times, want 2", r.Starts())
	}
	r.Close()
	if _, err := r.Inventory(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Inventory() after Close = %v, want ErrClosed", err)
	}
}

func TestRestartingFirstStartFails(t *testing.T) {
	boom := errors.New("exec format error")
	if _, err := NewRestarting(func() (*Client, error) { return nil, boom }, 0); !errors.Is(err, boom) {
		t.Fatalf("NewRestarting() = %v, want the start's error", err)
	}
}
