package gpupipe

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Start runs the helper at path and returns a Client talking to it over
// its standard input and output; its standard error goes to the logger
// (WithLogger). The helper is killed when ctx ends, when a request times
// out or is answered with nonsense, and by Close.
func Start(ctx context.Context, path string, opts ...Option) (*Client, error) {
	o := newOptions(opts)
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	stderr := &lineLog{log: o.log}
	cmd := exec.CommandContext(ctx, path, o.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	// A child of the helper holding its standard error must not hold
	// the Client up.
	cmd.WaitDelay = time.Second
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("starting the GPU helper: %w", err)
	}
	c := newClient(inW, o)
	var once sync.Once
	c.stop = func() { once.Do(func() { cmd.Process.Kill() }) }
	go c.read(outR)
	go func() {
		werr := cmd.Wait()
		inW.Close()
		stderr.flush()
		e := &ExitError{Err: werr, Code: cmd.ProcessState.ExitCode(), Stderr: stderr.last()}
		c.setFailure(e)
		c.log.Info("GPU helper gone", "err", c.failed())
		c.setGone()
		outR.Close()
	}()
	return c, nil
}

// lineLog logs what the helper writes to its standard error, a record a
// line, and keeps the last line.
type lineLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	partial []byte
	lastLn  string
}

// maxLogLine is the longest stderr line kept; the rest is dropped.
const maxLogLine = 4 << 10

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > maxLogLine {
		l.line(l.partial)
		l.partial = nil
	}
	l.partial = append([]byte(nil), l.partial...)
	return len(p), nil
}

func (l *lineLog) line(b []byte) {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b[:min(len(b), maxLogLine)]), "?"))
	if s == "" {
		return
	}
	l.lastLn = s
	l.log.Info("GPU helper", "stderr", s)
}

// flush logs a last line the helper did not end.
func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(l.partial)
		l.partial = nil
	}
}

func (l *lineLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastLn
}
