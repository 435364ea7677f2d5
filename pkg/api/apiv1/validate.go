package apiv1

import (
	"errors"
	"fmt"
	"regexp"
)

// Limits on workload requests, shared by the command line, the verifier
// and the agent: a request one side accepts is not refused by another for
// its shape (the agent still refuses what its ASK plan does not offer).
const (
	// MaxWorkloadIDLen is the longest workload ID.
	MaxWorkloadIDLen = 64
	// MaxImageArchive bounds an OCI image archive sent with a workload.
	MaxImageArchive = 512 << 20
	// MinPort and MaxPort bound the TCP ports a workload publishes.
	MinPort, MaxPort = 1, 65535
)

var workloadIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidWorkloadID reports whether id can name a workload: 1 to
// MaxWorkloadIDLen letters, digits, '.', '_' or '-', starting with a
// letter or digit (IDs become file and container names on the node).
func ValidWorkloadID(id string) error {
	if !workloadIDPattern.MatchString(id) {
		return fmt.Errorf("workload id %s: want 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit",
			quoteShort(id), MaxWorkloadIDLen)
	}
	return nil
}

// Validate checks the spec's shape and reports every problem at once: its
// ID, that no resource is negative and that published ports are in range.
// It does not check what a node offers (its ASK plan, free GPUs, disk),
// registry credentials, or that the image exists.
func (s *WorkloadSpec) Validate() error {
	if s == nil {
		return errors.New("spec: missing; want a workload spec")
	}
	var errs []error
	if err := ValidWorkloadID(s.GetId()); err != nil {
		errs = append(errs, err)
	}
	r := s.GetResources()
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"cpus", r.GetCpus()}, {"memory_bytes", float64(r.GetMemoryBytes())}, {"pids", float64(r.GetPids())},
		{"scratch_bytes", float64(r.GetScratchBytes())}, {"max_duration_ms", float64(s.GetMaxDurationMs())},
	} {
		// !(v >= 0) also refuses NaN.
		if !(f.v >= 0) {
			errs = append(errs, fmt.Errorf("negative resources: %s %v: want 0 (no limit asked) or more", f.name, f.v))
		}
	}
	for _, p := range s.GetNetwork().GetPorts() {
		if p < MinPort || p > MaxPort {
			errs = append(errs, fmt.Errorf("network: port %d out of range: want %d-%d", p, MinPort, MaxPort))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the request's spec (WorkloadSpec.Validate) and that
// the image archive agrees with it: sent exactly when spec.image_archive
// is set, at most MaxImageArchive bytes, and a registry reference named
// when there is none. It does not check the node.
func (r *RunWorkloadRequest) Validate() error {
	spec := r.GetSpec()
	errs := []error{spec.Validate()}
	archive := len(r.GetImageArchive())
	switch {
	case spec.GetImageArchive() && archive == 0:
		errs = append(errs, errors.New("image_archive is set but no archive was sent"))
	case !spec.GetImageArchive() && archive > 0:
		errs = append(errs, errors.New("an archive was sent but image_archive is not set"))
	case !spec.GetImageArchive() && spec.GetImage() == "":
		errs = append(errs, errors.New("image: a registry reference is required without an archive"))
	}
	if archive > MaxImageArchive {
		errs = append(errs, fmt.Errorf("image archive of %d bytes: want at most %d MiB", archive, MaxImageArchive>>20))
	}
	return errors.Join(errs...)
}

// quoteShort quotes an untrusted string for an error message, cut to a
// length a log line can carry.
func quoteShort(s string) string {
	const max = 2 * MaxWorkloadIDLen
	if len(s) > max {
		return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}
