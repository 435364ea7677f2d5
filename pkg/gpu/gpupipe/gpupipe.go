// Package gpupipe is the protocol between the agent and the GPU helper,
// a small cgo program that reads NVIDIA GPUs through NVML for the static
// agent: the agent (Client) writes one JSON request a line to the
// helper's standard input, the helper (Serve) answers each with one JSON
// line on its standard output, and logs to its standard error.
//
// Requests are {"op":"inventory"}, {"op":"health"} and
// {"op":"benchmark"}. Answers are {"gpus":[...]}, {"health":[...]},
// {"benchmarks":[...]} (gpucheck results, one per GPU) or
// {"error":"..."}; every answer
// carries "watch_error" once the helper's Xid watch (started with the
// helper) has failed. Lines are at most MaxLine bytes.
//
// The helper is trusted as much as the agent (both come from the
// verified system partition), but it runs NVIDIA's closed library: the
// Client treats what it says as untrusted input, bounds every request
// with a deadline and kills a helper that hangs or breaks the protocol.
// It does not restart one.
package gpupipe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// Source reads GPUs; *gpu.Monitor and *Client are sources.
type Source interface {
	Inventory() ([]gpu.GPU, error)
	Health() ([]gpu.Health, error)
	WatchXids(ctx context.Context) error
}

// MaxLine is the longest request or answer, newline included.
const MaxLine = 1 << 20

// ExitNoDriver is the helper's exit status when NVML finds no NVIDIA
// driver; the Client reports it as gpu.ErrNoDriver.
const ExitNoDriver = 3

// The operations.
const (
	OpInventory = "inventory"
	OpHealth    = "health"
	// OpBenchmark runs the GPU check (gpucheck.Run) on every GPU: the
	// helper is busy with it for seconds to minutes.
	OpBenchmark = "benchmark"
)

// ErrLineTooLong is returned for a line longer than MaxLine.
var ErrLineTooLong = fmt.Errorf("line longer than %d bytes", MaxLine)

type request struct {
	Op string `json:"op"`
}

type response struct {
	GPUs       *[]gpu.GPU         `json:"gpus,omitempty"`
	Health     *[]gpu.Health      `json:"health,omitempty"`
	Benchmarks *[]gpucheck.Result `json:"benchmarks,omitempty"`
	Error      string             `json:"error,omitempty"`
	WatchError string             `json:"watch_error,omitempty"`
}

// readLine reads one line, without its newline. A line cut short by the
// end of r is io.ErrUnexpectedEOF; no line at all is io.EOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine {
			return nil, ErrLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// decodeResponse parses the answer to op and checks its shape: the
// result op asks for, or an error, never both nor the other one.
func decodeResponse(op string, line []byte) (response, error) {
	var r response
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&r); err != nil {
		return response{}, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return response{}, errors.New("data after the JSON object")
	}
	results := 0
	if r.GPUs != nil {
		results++
	}
	if r.Health != nil {
		results++
	}
	if r.Benchmarks != nil {
		results++
	}
	switch {
	case r.Error != "" && results > 0:
		return response{}, errors.New("both an error and a result")
	case r.Error != "":
		return r, nil
	case op == OpInventory && (r.GPUs == nil || results != 1):
		return response{}, errors.New(`an inventory answer needs "gpus" and nothing else`)
	case op == OpHealth && (r.Health == nil || results != 1):
		return response{}, errors.New(`a health answer needs "health" and nothing else`)
	case op == OpBenchmark && (r.Benchmarks == nil || results != 1):
		return response{}, errors.New(`a benchmark answer needs "benchmarks" and nothing else`)
	case op != OpInventory && op != OpHealth && op != OpBenchmark:
		return response{}, fmt.Errorf("unknown op %q", op)
	}
	return r, nil
}
