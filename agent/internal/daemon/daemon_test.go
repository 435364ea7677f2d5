package daemon

import (
	"bytes"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/gpu/gpupipe"
	"github.com/rigos/rigos/pkg/measure"
)

func TestReadPlan(t *testing.T) {
	dir := t.TempDir()
	base := askplan.Plan{CPUs: 8, MemoryMB: 1 << 10}
	plan := base
	if j, err := readPlan(filepath.Join(dir, "absent.json"), &plan); err != nil || j != "" || plan != base {
		t.Errorf("no plan file: %q %v %+v", j, err, plan)
	}
	good := filepath.Join(dir, "plan.json")
	os.WriteFile(good, []byte(`{"version": 1, "cpus": 3, "memory_mb": 2048, "gpus": 1, "max_duration": "2h", "price": {"currency": "USD"}}`), 0o644)
	j, err := readPlan(good, &plan)
	if err != nil || plan != (askplan.Plan{Version: 1, CPUs: 3, MemoryMB: 2 << 10, GPUs: 1, MaxDuration: config.Duration(2 * time.Hour), Price: askplan.Price{Currency: "USD"}}) || !strings.Contains(j, `"cpus":3`) {
		t.Errorf("plan file: %q %v %+v", j, err, plan)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"version": 1, "cpus": 3, "price": {"currency": "US`), 0o644)
	plan = base
	if _, err := readPlan(bad, &plan); err == nil || !strings.Contains(err.Error(), "ASK plan") || plan != base {
		t.Errorf("truncated plan: %v, plan %+v (want an error and the plan untouched)", err, plan)
	}
}

// The agent compacts its runtime log with a verdict's checkpoint only
// once the log is past CompactAbove, and never with a checkpoint that
// does not match its log.
func TestCompactRuntimeLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.cel")
	var extended []measure.Event
	rec, err := measure.NewRecorder(path, func(_ int, d []byte) error { extended = append(extended, measure.Event{Digest: d}); return nil })
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	record := func(n int) {
		for range n {
			if _, err := rec.Record(measure.KindWorkload, []byte(strings.Repeat("w", 1500))); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkpoint := func() []byte {
		return measure.Checkpoint{Boot: 1, Events: uint64(len(extended)), PCR: hex.EncodeToString(measure.Replay(extended)), GPU: "none"}.Encode()
	}
	record(10)
	compactRuntimeLog(rec, checkpoint(), log)
	if b, _ := os.ReadFile(path); len(b) != int(rec.Size()) || rec.Size() < 10*1500 {
		t.Fatalf("a small log was compacted: %d bytes", rec.Size())
	}
	record(int(CompactAbove / 1500))
	compactRuntimeLog(rec, []byte(`{"boot":1,"events":3,"pcr":"`+strings.Repeat("00", 32)+`","gpu":"none"}`), log)
	if rec.Size() < CompactAbove {
		t.Fatalf("compacted with a checkpoint that does not match the log: %d bytes", rec.Size())
	}
	compactRuntimeLog(rec, checkpoint(), log)
	b, _ := os.ReadFile(path)
	events, err := measure.Parse(b)
	if err != nil || len(events) != 1 || events[0].Kind != measure.KindCheckpoint || !bytes.Equal(measure.Replay(events), measure.Replay(extended)) {
		t.Fatalf("compacted log: %d records, %v; want the checkpoint alone, replaying as before", len(events), err)
	}
}

// A node without SMBIOS tables (a VM, some boards) says hello without an
// inventory and logs why at warn.
func TestReadHardware(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if inv := readHardware(filepath.Join(t.TempDir(), "absent"), log); inv != nil {
		t.Errorf("readHardware(absent) = %+v, want nil", inv)
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "SMBIOS entry point") {
		t.Errorf("readHardware(absent) logged %q, want a warning naming the SMBIOS entry point", buf.String())
	}
	inv := readHardware("../../../pkg/hwinfo/testdata/dell-r630", log)
	if inv == nil || inv.System.Product != "PowerEdge R630" {
		t.Errorf("readHardware(dell-r630) = %+v, want the PowerEdge R630", inv)
	}
}

// An image with the GPU helper reads GPUs through it; a helper that
// finds no driver reads as gpu.ErrNoDriver, as NVML in the agent would.
func TestOpenGPUsThroughHelper(t *testing.T) {
	helper := filepath.Join(t.TempDir(), "rigos-gpu")
	script := "#!/bin/sh\necho 'rigos-gpu: no NVIDIA driver (NVML) on this machine' >&2\nexit " + strconv.Itoa(gpupipe.ExitNoDriver) + "\n"
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	src, closeSrc, err := openGPUs(t.Context(), helper, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatalf("openGPUs(helper) = %v", err)
	}
	defer closeSrc()
	if _, ok := src.(*gpupipe.Restarting); !ok {
		t.Fatalf("openGPUs(helper) = %T, want the restarting helper client", src)
	}
	if _, err := src.Inventory(); !errors.Is(err, gpu.ErrNoDriver) || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Inventory() = %v, want %v from exit status 3", err, gpu.ErrNoDriver)
	}
}
