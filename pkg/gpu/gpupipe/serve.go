package gpupipe

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// BenchmarkFunc runs the GPU check on every GPU; the helper's is
// gpucheck.Run with the image's libcuda.
type BenchmarkFunc func(ctx context.Context) ([]gpucheck.Result, error)

// ServeOption configures Serve.
type ServeOption func(*serveOptions)

type serveOptions struct {
	benchmark BenchmarkFunc
}

// WithBenchmark answers benchmark requests with f. Default is answering
// them with an error: this helper cannot benchmark.
func WithBenchmark(f BenchmarkFunc) ServeOption {
	return func(o *serveOptions) { o.benchmark = f }
}

// Serve answers the requests read from r on w, one line each, until r
// ends (the agent went away: Serve returns nil) or ctx ends. From the
// start it runs src.WatchXids, which records Xid errors that later health
// answers show; if the watch fails, every later answer says so in
// "watch_error". Serve stops the watch and waits for it before it
// returns, so the caller may close src then. A malformed request gets an
// error answer; a request longer than MaxLine ends Serve with an error.
// Serve does not close r: a read of r in progress when ctx ends
// outlives Serve until r ends. A benchmark request runs to its end
// (or ctx's) before Serve reads the next request.
func Serve(ctx context.Context, src Source, r io.Reader, w io.Writer, opts ...ServeOption) error {
	var o serveOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(ctx)
	var watch sync.WaitGroup
	var mu sync.Mutex
	var watchErr string
	watch.Go(func() {
		if err := src.WatchXids(ctx); err != nil && ctx.Err() == nil {
			mu.Lock()
			watchErr = "watching Xid errors: " + errText(err)
			mu.Unlock()
		}
	})
	defer watch.Wait()
	defer cancel()

	type read struct {
		line []byte
		err  error
	}
	lines := make(chan read)
	go func() {
		br := bufio.NewReader(r)
		for {
			line, err := readLine(br)
			select {
			case lines <- read{line, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var in read
		select {
		case <-ctx.Done():
			return ctx.Err()
		case in = <-lines:
		}
		switch {
		case in.err == io.EOF || in.err == io.ErrUnexpectedEOF:
			return nil
		case in.err != nil:
			return fmt.Errorf("reading a request: %w", in.err)
		}
		resp := answer(ctx, src, o, in.line)
		mu.Lock()
		resp.WatchError = watchErr
		mu.Unlock()
		b, err := json.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encoding an answer: %w", err)
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("writing an answer: %w", err)
		}
	}
}

// answer answers one request line.
func answer(ctx context.Context, src Source, o serveOptions, line []byte) response {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return response{Error: fmt.Sprintf("bad request: %v", err)}
	}
	switch req.Op {
	case OpInventory:
		inv, err := src.Inventory()
		if err != nil {
			return response{Error: errText(err)}
		}
		if inv == nil {
			inv = []gpu.GPU{}
		}
		return response{GPUs: &inv}
	case OpHealth:
		h, err := src.Health()
		if err != nil {
			return response{Error: errText(err)}
		}
		if h == nil {
			h = []gpu.Health{}
		}
		return response{Health: &h}
	case OpBenchmark:
		if o.benchmark == nil {
			return response{Error: "benchmark: this GPU helper cannot benchmark"}
		}
		rs, err := o.benchmark(ctx)
		if err != nil {
			return response{Error: "benchmark: " + errText(err)}
		}
		if rs == nil {
			rs = []gpucheck.Result{}
		}
		return response{Benchmarks: &rs}
	}
	return response{Error: fmt.Sprintf("bad request: unknown op %q", req.Op)}
}

// errText is err's message, never empty: an empty error would read as
// no error.
func errText(err error) string {
	if s := err.Error(); s != "" {
		return s
	}
	return "unknown error"
}
