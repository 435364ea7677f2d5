package gpupipe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// Errors a Client returns; a helper that exited gives an *ExitError.
var (
	// ErrTimeout: the helper did not answer a request in time. The
	// Client killed it.
	ErrTimeout = errors.New("GPU helper did not answer in time")
	// ErrProtocol: the helper's answer was not one. The Client killed it:
	// its later answers could not be matched to requests.
	ErrProtocol = errors.New("GPU helper broke the protocol")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("GPU helper client closed")
)

// ExitError reports that the helper exited.
type ExitError struct {
	// Err is what waiting for the helper returned (an *exec.ExitError;
	// nil for exit status 0).
	Err error
	// Code is the exit status, -1 when a signal ended the helper.
	Code int
	// Stderr is the last line the helper wrote to its standard error.
	Stderr string
}

func (e *ExitError) Error() string {
	s := "GPU helper exited: exit status 0"
	if e.Err != nil {
		s = "GPU helper exited: " + e.Err.Error()
	}
	if e.Stderr != "" {
		s += ": " + e.Stderr
	}
	return s
}

// Unwrap returns Err, and gpu.ErrNoDriver when the helper exited with
// ExitNoDriver.
func (e *ExitError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Code == ExitNoDriver {
		errs = append(errs, gpu.ErrNoDriver)
	}
	return errs
}

// Option configures a Client.
type Option func(*options)

type options struct {
	args         []string
	log          *slog.Logger
	timeout      time.Duration
	startTimeout time.Duration
	benchTimeout time.Duration
}

// WithArgs passes args to the helper Start runs.
func WithArgs(args ...string) Option { return func(o *options) { o.args = args } }

// WithLogger logs the helper's standard error, a record a line, and the
// Client's own notes to log. Default is discarding them.
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithTimeout bounds each request but the first, from sending it to its
// answer. Default is DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithStartTimeout bounds the first request, which waits for the helper
// to start NVML (seconds per GPU without persistence mode). Default is
// DefaultStartTimeout.
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithBenchmarkTimeout bounds a benchmark request, from sending it to
// its answer (the first request's start timeout, when longer, applies
// to it instead). Default is DefaultBenchmarkTimeout.
func WithBenchmarkTimeout(d time.Duration) Option { return func(o *options) { o.benchTimeout = d } }

// Default deadlines.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultStartTimeout = time.Minute
	// DefaultBenchmarkTimeout leaves room for eight GPUs' PTX
	// compilation, kernels and copies, a few seconds each.
	DefaultBenchmarkTimeout = 5 * time.Minute
)

func newOptions(opts []Option) options {
	o := options{log: slog.New(slog.DiscardHandler), timeout: DefaultTimeout, startTimeout: DefaultStartTimeout,
		benchTimeout: DefaultBenchmarkTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Client is the agent's side: a Source that asks the helper. It sends
// one request at a time and is safe for concurrent use.
type Client struct {
	w     io.Writer
	lines chan []byte // answers; closed when the helper's output ends
	log   *slog.Logger
	// stop kills the helper, or closes the pipes of a NewClient.
	stop func()

	mu      sync.Mutex    // one request at a time
	timeout time.Duration // for the next request
	next    time.Duration // for the requests after it
	bench   time.Duration // for benchmark requests

	fmu     sync.Mutex
	failure error         // why the helper is unusable; set once
	gone    chan struct{} // closed once the helper is gone
	goneErr error         // set before gone is closed
	watched chan struct{} // closed when an answer carries a watch error
	watchE  error
}

// NewClient returns a Client that writes requests to w and reads
// answers from r, with no process behind them (tests, or a helper
// started otherwise). The helper is gone when r ends; Close closes r and
// w where they are io.Closers.
func NewClient(r io.Reader, w io.Writer, opts ...Option) *Client {
	c := newClient(w, newOptions(opts))
	c.stop = func() {
		for _, x := range []any{r, w} {
			if cl, ok := x.(io.Closer); ok {
				cl.Close()
			}
		}
		c.setGone()
	}
	go func() {
		err := c.read(r)
		c.setFailure(fmt.Errorf("GPU helper closed its output: %w", err))
		c.setGone()
	}()
	return c
}

func newClient(w io.Writer, o options) *Client {
	return &Client{w: w, lines: make(chan []byte), log: o.log, timeout: o.startTimeout, next: o.timeout, bench: o.benchTimeout,
		gone: make(chan struct{}), watched: make(chan struct{})}
}

// read passes the helper's answers to calls until r ends, and returns
// why it ended. A line that is too long is a protocol error.
func (c *Client) read(r io.Reader) error {
	defer close(c.lines)
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if errors.Is(err, ErrLineTooLong) {
			c.fail(fmt.Errorf("%w: %w", ErrProtocol, err))
		}
		if err != nil {
			return err
		}
		select {
		case c.lines <- line:
		case <-c.gone:
			return ErrClosed
		}
	}
}

// setFailure records why the helper is unusable, unless a reason is
// already recorded.
func (c *Client) setFailure(err error) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.failure == nil {
		c.failure = err
	}
}

// fail records err and stops the helper.
func (c *Client) fail(err error) {
	c.setFailure(err)
	c.stop()
}

// setGone marks the helper gone, for the recorded failure.
func (c *Client) setGone() {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.goneErr != nil {
		return
	}
	c.goneErr = c.failure
	if c.goneErr == nil {
		c.goneErr = errors.New("GPU helper gone")
	}
	close(c.gone)
}

// failed returns why the helper is unusable, or nil.
func (c *Client) failed() error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.failure
}

// Inventory asks the helper for the GPU inventory.
func (c *Client) Inventory() ([]gpu.GPU, error) {
	r, err := c.call(nil, OpInventory)
	if err != nil {
		return nil, err
	}
	return *r.GPUs, nil
}

// Health asks the helper for the GPUs' health, Xid errors included.
func (c *Client) Health() ([]gpu.Health, error) {
	r, err := c.call(nil, OpHealth)
	if err != nil {
		return nil, err
	}
	return *r.Health, nil
}

// Benchmark asks the helper to run the GPU check (gpucheck.Run) on
// every GPU, and waits for the results up to the benchmark timeout. The
// helper answers nothing else meanwhile: other requests wait their
// turn. When ctx ends before the answer, the Client stops the helper,
// as for a timeout: its late answer could not be matched to a request.
func (c *Client) Benchmark(ctx context.Context) ([]gpucheck.Result, error) {
	r, err := c.call(ctx, OpBenchmark)
	if err != nil {
		return nil, err
	}
	return *r.Benchmarks, nil
}

// WatchXids waits until ctx ends (nil), the helper reports that its Xid
// watch failed, or the helper is gone (why). The helper watches Xid
// errors from its start; Health returns them.
func (c *Client) WatchXids(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-c.watched:
		return c.watchE
	case <-c.gone:
		return c.goneErr
	}
}

// Close stops the helper and waits until it is gone.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	<-c.gone
	return nil
}

// call sends op and returns the helper's answer to it. A helper that
// does not answer in time, answers nonsense or is still at it when ctx
// (nil: none) ends is stopped.
func (c *Client) call(ctx context.Context, op string) (response, error) {
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failed(); err != nil {
		return response{}, err
	}
	if ctx != nil && ctx.Err() != nil {
		return response{}, ctx.Err()
	}
	timeout := c.timeout
	if op == OpBenchmark {
		timeout = max(timeout, c.bench)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	sent := make(chan error, 1)
	go func() {
		_, err := c.w.Write([]byte(`{"op":"` + op + `"}` + "\n"))
		sent <- err
	}()
	select {
	case err := <-sent:
		if err != nil {
			return response{}, c.lost(timer, fmt.Errorf("sending %s request: %w", op, err))
		}
	case <-timer.C:
		return response{}, c.timedOut(op, timeout)
	case <-c.gone:
		return response{}, c.goneErr
	case <-done:
		return response{}, c.abandoned(ctx, op)
	}
	var line []byte
	select {
	case l, ok := <-c.lines:
		if !ok {
			return response{}, c.lost(timer, fmt.Errorf("GPU helper closed its output during %s request", op))
		}
		line = l
	case <-timer.C:
		return response{}, c.timedOut(op, timeout)
	case <-c.gone:
		return response{}, c.goneErr
	case <-done:
		return response{}, c.abandoned(ctx, op)
	}
	c.timeout = c.next
	r, err := decodeResponse(op, line)
	if err != nil {
		err = fmt.Errorf("%w: answer to %s: %w", ErrProtocol, op, err)
		c.fail(err)
		return response{}, err
	}
	if r.WatchError != "" {
		c.noteWatchError(r.WatchError)
	}
	if r.Error != "" {
		return response{}, fmt.Errorf("GPU helper: %s", r.Error)
	}
	return r, nil
}

// lost waits (until timer fires) for a helper that stopped listening or
// talking to be gone, and returns why it went; err when it does not go.
func (c *Client) lost(timer *time.Timer, err error) error {
	select {
	case <-c.gone:
		return c.goneErr
	case <-timer.C:
		c.fail(err)
		return err
	}
}

func (c *Client) timedOut(op string, after time.Duration) error {
	err := fmt.Errorf("%w: no answer to %s within %v; stopped it", ErrTimeout, op, after)
	c.fail(err)
	return err
}

// abandoned stops a helper whose answer to op is no longer awaited.
func (c *Client) abandoned(ctx context.Context, op string) error {
	err := fmt.Errorf("%s request abandoned; stopped the GPU helper: %w", op, context.Cause(ctx))
	c.fail(err)
	return err
}

func (c *Client) noteWatchError(msg string) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.watchE == nil {
		c.watchE = fmt.Errorf("GPU helper: %s", msg)
		close(c.watched)
	}
}

var _ Source = (*Client)(nil)
