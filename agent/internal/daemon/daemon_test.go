package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/agent/internal/workload"
)

func TestReadPlan(t *testing.T) {
	dir := t.TempDir()
	base := workload.Plan{CPUs: 8, MemoryBytes: 1 << 30}
	plan := base
	if j, err := readPlan(filepath.Join(dir, "absent.json"), &plan); err != nil || j != "" || plan != base {
		t.Errorf("no plan file: %q %v %+v", j, err, plan)
	}
	good := filepath.Join(dir, "plan.json")
	os.WriteFile(good, []byte(`{"version": 1, "cpus": 3, "memory_mb": 2048, "gpus": 1, "max_duration": "2h", "price": {"currency": "USD"}}`), 0o644)
	j, err := readPlan(good, &plan)
	if err != nil || plan != (workload.Plan{CPUs: 3, MemoryBytes: 2 << 30, GPUs: 1, MaxDuration: 2 * time.Hour}) || !strings.Contains(j, `"cpus":3`) {
		t.Errorf("plan file: %q %v %+v", j, err, plan)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"version": 1, "cpus": 3, "price": {"currency": "US`), 0o644)
	plan = base
	if _, err := readPlan(bad, &plan); err == nil || !strings.Contains(err.Error(), "ASK plan") || plan != base {
		t.Errorf("truncated plan: %v, plan %+v (want an error and the plan untouched)", err, plan)
	}
}
