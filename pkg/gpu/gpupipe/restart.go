package gpupipe

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// DefaultRestartBackoff is the least time between two starts of the
// helper by a Restarting.
const DefaultRestartBackoff = 10 * time.Second

// Restarting is a Source over a helper that is started again once it is
// gone: it exited or crashed, or its Client stopped it for a missed
// deadline or a broken answer. The call that finds it gone fails with
// why; a call at least the backoff after the last start starts a new
// one. So a crash in NVIDIA's library costs the node its GPU readings
// for a while, not for good.
type Restarting struct {
	start   func() (*Client, error)
	backoff time.Duration
	now     func() time.Time

	mu      sync.Mutex
	c       *Client
	started time.Time
	starts  int
	closed  bool
}

// NewRestarting starts the helper with start and returns the Source;
// backoff 0 means DefaultRestartBackoff.
func NewRestarting(start func() (*Client, error), backoff time.Duration) (*Restarting, error) {
	if backoff == 0 {
		backoff = DefaultRestartBackoff
	}
	r := &Restarting{start: start, backoff: backoff, now: time.Now}
	if _, err := r.client(); err != nil {
		return nil, err
	}
	return r, nil
}

// client returns a usable Client, starting a new helper when the last
// one is gone and the backoff has passed.
func (r *Restarting) client() (*Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if r.c != nil {
		why := r.c.failed()
		if why == nil {
			return r.c, nil
		}
		if wait := r.backoff - r.now().Sub(r.started); wait > 0 {
			return nil, fmt.Errorf("%w (starting it again in %s)", why, wait.Round(time.Second))
		}
		r.c.Close()
		r.c = nil
	}
	r.started = r.now()
	r.starts++
	c, err := r.start()
	if err != nil {
		return nil, fmt.Errorf("starting the GPU helper: %w", err)
	}
	r.c = c
	return c, nil
}

// Starts reports how many times the helper was started.
func (r *Restarting) Starts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts
}

// Inventory asks the current helper (see Client.Inventory).
func (r *Restarting) Inventory() ([]gpu.GPU, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	return c.Inventory()
}

// Health asks the current helper (see Client.Health).
func (r *Restarting) Health() ([]gpu.Health, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	return c.Health()
}

// Benchmark asks the current helper (see Client.Benchmark).
func (r *Restarting) Benchmark(ctx context.Context) ([]gpucheck.Result, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	return c.Benchmark(ctx)
}

// WatchXids waits on the current helper's Xid watch, and on the next
// helper's when one is gone, until ctx ends (nil) or a live helper's
// watch fails (its error).
func (r *Restarting) WatchXids(ctx context.Context) error {
	for ctx.Err() == nil {
		c, err := r.client()
		if err == nil {
			err = c.WatchXids(ctx)
			if ctx.Err() != nil || c.failed() == nil {
				return err
			}
		}
		if err == ErrClosed {
			return err
		}
		t := time.NewTimer(r.backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// Close stops the helper for good.
func (r *Restarting) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.c != nil {
		return r.c.Close()
	}
	return nil
}

var _ Source = (*Restarting)(nil)
