package askplan

import (
	"strings"
	"testing"
	"time"
)

const good = `{"version": 1, "cpus": 12.5, "memory_mb": 65536, "gpus": 2, "max_duration": "6h",
 "price": {"currency": "USD", "per_gpu_hour": 1.8, "per_cpu_hour": 0.02, "per_gb_memory_hour": 0.004}}`

func TestParse(t *testing.T) {
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p.CPUs != 12.5 || p.GPUs != 2 || p.MaxDuration.D() != 6*time.Hour || p.Price.PerGPU != 1.8 {
		t.Errorf("parsed %+v", p)
	}
	p, err = Parse([]byte(`{"version": 1, "price": {"currency": "EUR"}}`))
	if err != nil || p.MaxDuration.D() != 24*time.Hour {
		t.Errorf("defaults: %+v, %v", p, err)
	}
}

func TestParseRejects(t *testing.T) {
	for name, c := range map[string]struct{ in, want string }{
		"not JSON":        {`cpus: 4`, "invalid character"},
		"unknown field":   {`{"version": 1, "cpu": 4, "price": {"currency": "USD"}}`, "unknown field"},
		"truncated":       {good[:40], "unexpected EOF"},
		"trailing":        {`{"version": 1, "price": {"currency": "USD"}} {}`, "trailing data"},
		"version":         {`{"version": 2, "price": {"currency": "USD"}}`, "version 2"},
		"negative":        {`{"version": 1, "gpus": -1, "price": {"currency": "USD", "per_gpu_hour": -1}}`, "gpus -1 out of range"},
		"every problem":   {`{"version": 1, "cpus": -1, "memory_mb": -5, "price": {"currency": "usd"}}`, "memory_mb -5"},
		"currency":        {`{"version": 1, "price": {"currency": "dollars"}}`, "ISO 4217"},
		"duration":        {`{"version": 1, "max_duration": 5, "price": {"currency": "USD"}}`, "duration must be a string"},
		"string for cpus": {`{"version": 1, "cpus": "4", "price": {"currency": "USD"}}`, "cannot unmarshal"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "ASK plan: ") {
			t.Errorf("%s: %v, want an ASK plan error mentioning %q", name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err == nil && p.Validate() != nil {
			t.Fatalf("Parse accepted an invalid plan: %+v", p)
		}
	})
}
