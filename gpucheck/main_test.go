package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"text/template"

	"github.com/rigos/rigos/pkg/gpu/gpucheck"
)

var results = []gpucheck.Result{
	{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Correct: true, BandwidthGBps: 2901.4, FP32TFLOPS: 58.27},
	{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30, Problem: "fma_loop computed wrongly: 1 of 1081344 elements wrong: [17] = 524412, want 524416", BandwidthGBps: 2899},
}

func TestPrintTable(t *testing.T) {
	var b bytes.Buffer
	if err := printTable(&b, results); err != nil {
		t.Fatal(err)
	}
	want := `GPU  NAME                   UUID      MEMORY  BANDWIDTH  FP32         RESULT
0    NVIDIA H100 80GB HBM3  GPU-aaaa  80 GiB  2901 GB/s  58.3 TFLOPS  correct
1    NVIDIA H100 80GB HBM3  GPU-bbbb  80 GiB  2899 GB/s  -            FAILED
GPU 1 (GPU-bbbb): fma_loop computed wrongly: 1 of 1081344 elements wrong: [17] = 524412, want 524416
`
	if b.String() != want {
		t.Errorf("printTable() =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintJSON(t *testing.T) {
	var b bytes.Buffer
	if err := printJSON(&b, results[:1]); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"index": 0`, `"uuid": "GPU-aaaa"`, `"memory_bytes": 85899345920`, `"correct": true`, `"bandwidth_gbps": 2901.4`, `"fp32_tflops": 58.27`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printJSON() lacks %s:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "problem") {
		t.Errorf("printJSON() of a correct GPU has a problem field:\n%s", b.String())
	}
}

func TestPrintTemplate(t *testing.T) {
	var b bytes.Buffer
	tmpl := template.Must(template.New("f").Parse(`{{.Index}} {{printf "%.0f" .BandwidthGBps}} {{.Correct}}` + "\n"))
	if err := printTemplate(&b, tmpl, results); err != nil {
		t.Fatal(err)
	}
	if want := "0 2901 true\n1 2899 false\n"; b.String() != want {
		t.Errorf("printTemplate() = %q, want %q", b.String(), want)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-json", "-f", "{{.Index}}"}, {"-f", "{{"}, {"-fma-trips", "-1"}} {
		if err := run(args, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}
