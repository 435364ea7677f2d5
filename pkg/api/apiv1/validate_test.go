package apiv1

import (
	"math"
	"strings"
	"testing"
)

func TestValidWorkloadID(t *testing.T) {
	for _, id := range []string{"a", "job-1", "A.b_c-9", strings.Repeat("x", MaxWorkloadIDLen)} {
		if err := ValidWorkloadID(id); err != nil {
			t.Errorf("ValidWorkloadID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", "-a", ".a", "_a", "../x", "a/b", "a b", "é", strings.Repeat("x", MaxWorkloadIDLen+1)} {
		err := ValidWorkloadID(id)
		if err == nil || !strings.Contains(err.Error(), "workload id") || !strings.Contains(err.Error(), "want 1-64 letters") {
			t.Errorf("ValidWorkloadID(%q) = %v, want an error naming the id and what is allowed", id, err)
		}
	}
	if err := ValidWorkloadID(strings.Repeat("/", 1<<20)); err == nil || len(err.Error()) > 512 {
		t.Errorf("ValidWorkloadID(1 MiB) = %d bytes of error, want it cut short", len(err.Error()))
	}
}

func TestWorkloadSpecValidate(t *testing.T) {
	good := func() *WorkloadSpec {
		return &WorkloadSpec{Id: "w", Image: "reg.example/x:1",
			Resources: &Resources{Cpus: 1.5, MemoryBytes: 1 << 30, Pids: 100, ScratchBytes: 1 << 20, Gpus: 1},
			Network:   &NetworkPolicy{Ports: []uint32{MinPort, 8080, MaxPort}}, MaxDurationMs: 1000}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("Validate(good) = %v, want nil", err)
	}
	if err := (&WorkloadSpec{Id: "bare"}).Validate(); err != nil {
		t.Errorf("Validate(id only) = %v, want nil (zero means no limit asked)", err)
	}
	cases := map[string]struct {
		mod  func(*WorkloadSpec)
		want []string
	}{
		"bad id":        {func(s *WorkloadSpec) { s.Id = "../x" }, []string{`workload id "../x": want 1-64`}},
		"no id":         {func(s *WorkloadSpec) { s.Id = "" }, []string{`workload id ""`}},
		"negative cpus": {func(s *WorkloadSpec) { s.Resources.Cpus = -1 }, []string{"negative resources: cpus -1: want 0"}},
		"NaN cpus":      {func(s *WorkloadSpec) { s.Resources.Cpus = math.NaN() }, []string{"cpus NaN"}},
		"negative mem":  {func(s *WorkloadSpec) { s.Resources.MemoryBytes = -1 }, []string{"memory_bytes -1"}},
		"negative pids": {func(s *WorkloadSpec) { s.Resources.Pids = -1 }, []string{"pids -1"}},
		"negative disk": {func(s *WorkloadSpec) { s.Resources.ScratchBytes = -5 }, []string{"scratch_bytes -5"}},
		"negative time": {func(s *WorkloadSpec) { s.MaxDurationMs = -1 }, []string{"max_duration_ms -1"}},
		"port 0":        {func(s *WorkloadSpec) { s.Network.Ports = []uint32{0} }, []string{"port 0 out of range: want 1-65535"}},
		"port too high": {func(s *WorkloadSpec) { s.Network.Ports = []uint32{70000} }, []string{"port 70000 out of range: want 1-65535"}},
		"several at once": {func(s *WorkloadSpec) { s.Id, s.Resources.Pids, s.Network.Ports = "", -1, []uint32{0} },
			[]string{"workload id", "pids -1", "port 0"}},
	}
	for name, c := range cases {
		s := good()
		c.mod(s)
		err := s.Validate()
		for _, want := range c.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: Validate() = %v, want it to say %q", name, err, want)
			}
		}
	}
	var nilSpec *WorkloadSpec
	if err := nilSpec.Validate(); err == nil || !strings.Contains(err.Error(), "spec: missing") {
		t.Errorf("nil.Validate() = %v, want spec: missing", err)
	}
}

func TestRunWorkloadRequestValidate(t *testing.T) {
	cases := map[string]struct {
		req  *RunWorkloadRequest
		want string // "" for valid
	}{
		"pull":            {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w", Image: "x"}}, ""},
		"archive":         {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w", ImageArchive: true}, ImageArchive: []byte("tar")}, ""},
		"no spec":         {&RunWorkloadRequest{}, "spec: missing"},
		"bad spec":        {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "-", Image: "x"}}, "workload id"},
		"archive missing": {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w", ImageArchive: true}}, "image_archive is set but no archive was sent"},
		"archive unasked": {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w", Image: "x"}, ImageArchive: []byte("tar")}, "image_archive is not set"},
		"no image":        {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w"}}, "a registry reference is required"},
		"archive too big": {&RunWorkloadRequest{Spec: &WorkloadSpec{Id: "w", ImageArchive: true}, ImageArchive: make([]byte, MaxImageArchive+1)}, "want at most 512 MiB"},
	}
	for name, c := range cases {
		err := c.req.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, c.want)
		}
	}
}

// Validate never panics, and accepts exactly the IDs the pattern allows
// with no negative resource and every port in range.
func FuzzWorkloadSpecValidate(f *testing.F) {
	f.Add("w", 1.5, int64(1<<30), int64(0), uint32(8080))
	f.Add("../x", -1.0, int64(-1), int64(-1), uint32(0))
	f.Fuzz(func(t *testing.T, id string, cpus float64, mem, dur int64, port uint32) {
		s := &WorkloadSpec{Id: id, Resources: &Resources{Cpus: cpus, MemoryBytes: mem}, MaxDurationMs: dur,
			Network: &NetworkPolicy{Ports: []uint32{port}}}
		err := s.Validate()
		ok := ValidWorkloadID(id) == nil && cpus >= 0 && mem >= 0 && dur >= 0 && port >= MinPort && port <= MaxPort
		if ok != (err == nil) {
			t.Errorf("Validate(%+v) = %v, want ok %v", s, err, ok)
		}
		if ok && (len(id) == 0 || len(id) > MaxWorkloadIDLen) {
			t.Errorf("ID %q of %d bytes accepted", id, len(id))
		}
	})
}
