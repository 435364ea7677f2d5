// Command gpucheck checks that each NVIDIA GPU computes correctly and
// measures its memory bandwidth and FP32 throughput, with only the
// driver installed (pkg/gpu/gpucheck). It prints a table, JSON (-json)
// or a Go template per GPU (-f).
//
// Exit status: 0 when every GPU computed correctly; 1 when one did not
// or a step failed; 2 for bad usage; 3 when there is no NVIDIA driver or
// no GPU to check.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"text/template"

	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

// Exit statuses besides 0 and 1.
const (
	exitUsage = 2
	exitNoGPU = 3
)

// errWrong reports that a GPU failed the check; the results say which.
var errWrong = errors.New("a GPU failed the check")

func main() {
	err := run(os.Args[1:], os.Stdout)
	switch {
	case err == nil:
		return
	case errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, errUsage):
		os.Exit(exitUsage)
	case errors.Is(err, gpucheck.ErrNoDriver), errors.Is(err, gpucheck.ErrNoGPU):
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		os.Exit(exitNoGPU)
	default:
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gpucheck", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	format := fs.String("f", "", "print each GPU's result with this Go template (fields of gpucheck.Result), one line each")
	var o gpucheck.Options
	fs.IntVar(&o.SAXPYElements, "saxpy-elements", 0, "saxpy vector length (0: the default, 4194304)")
	fs.IntVar(&o.FMATrips, "fma-trips", 0, fmt.Sprintf("fma_loop trips per thread, at most %d (0: the default, 16384)", gpucheck.MaxFMATrips))
	copyMiB := fs.Uint64("copy-mib", 0, "bandwidth buffer in MiB (0: the default, 1024, or a quarter of free memory)")
	fs.IntVar(&o.CopyRepeats, "copy-repeats", 0, "timed copies (0: the default, 20)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "gpucheck: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if *asJSON && *format != "" {
		fmt.Fprintln(fs.Output(), "gpucheck: -json and -f exclude each other")
		return errUsage
	}
	var tmpl *template.Template
	if *format != "" {
		var err error
		if tmpl, err = template.New("f").Parse(*format + "\n"); err != nil {
			fmt.Fprintln(fs.Output(), "gpucheck: -f:", err)
			return errUsage
		}
	}
	o.CopyBytes = *copyMiB << 20
	if err := o.Validate(); err != nil {
		fmt.Fprintln(fs.Output(), "gpucheck:", err)
		return errUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := gpucheck.Run(ctx, o)
	if len(results) > 0 {
		var perr error
		switch {
		case *asJSON:
			perr = printJSON(stdout, results)
		case tmpl != nil:
			perr = printTemplate(stdout, tmpl, results)
		default:
			perr = printTable(stdout, results)
		}
		if perr != nil {
			return fmt.Errorf("printing the results: %w", perr)
		}
	}
	if err != nil {
		return err
	}
	for _, r := range results {
		if !r.Correct {
			return errWrong
		}
	}
	return nil
}

func printJSON(w io.Writer, rs []gpucheck.Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

func printTemplate(w io.Writer, t *template.Template, rs []gpucheck.Result) error {
	for _, r := range rs {
		if err := t.Execute(w, r); err != nil {
			return err
		}
	}
	return nil
}

// printTable writes one row per GPU, then what went wrong on the GPUs
// that failed.
func printTable(w io.Writer, rs []gpucheck.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tNAME\tUUID\tMEMORY\tBANDWIDTH\tFP32\tRESULT")
	for _, r := range rs {
		result := "correct"
		if !r.Correct {
			result = "FAILED"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d GiB\t%s\t%s\t%s\n", r.Index, r.Name, r.UUID, r.MemoryBytes>>30,
			figure(r.BandwidthGBps, "%.0f GB/s"), figure(r.FP32TFLOPS, "%.1f TFLOPS"), result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if !r.Correct {
			if _, err := fmt.Fprintf(w, "GPU %d (%s): %s\n", r.Index, r.UUID, r.Problem); err != nil {
				return err
			}
		}
	}
	return nil
}

// figure prints a measurement, or "-" for one not made.
func figure(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
