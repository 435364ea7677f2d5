// Package askplan is the supplier's ASK plan: what a rig offers to the
// marketplace (CPU, memory, GPUs, the longest workload it takes) and at
// what price. The supplier writes it as RIGOS/plan.json on the USB
// stick's EFI partition (imager -plan, or by hand after flashing); the
// agent enforces its limits on every workload and reports it to the
// verifier. The file is the supplier's own claim: it is parsed strictly
// and a malformed plan is reported, never guessed at.
package askplan

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout"
)

// Version is the plan format this build reads.
const Version = 1

// DefaultMaxDuration is the longest workload a rig takes when its plan
// does not say.
const DefaultMaxDuration = 24 * time.Hour

// Path is where the plan lives on the EFI system partition.
const Path = layout.ESPPlan

// Plan is an ASK plan.
type Plan struct {
	Version int `json:"version"`
	// CPUs offered (cores, fractions allowed); 0 means all.
	CPUs float64 `json:"cpus"`
	// MemoryMB offered; 0 means all.
	MemoryMB int64 `json:"memory_mb"`
	// GPUs offered; 0 means all found.
	GPUs int `json:"gpus"`
	// MaxDuration is the longest workload the rig takes. Default "24h".
	MaxDuration config.Duration `json:"max_duration"`
	// Price is what the supplier asks, per hour.
	Price Price `json:"price"`
}

// Price is a price list per hour of use.
type Price struct {
	Currency string  `json:"currency"` // ISO 4217, e.g. "USD"
	PerGPU   float64 `json:"per_gpu_hour"`
	PerCPU   float64 `json:"per_cpu_hour"`
	PerGB    float64 `json:"per_gb_memory_hour"`
}

var currency = regexp.MustCompile(`^[A-Z]{3}$`)

// Parse strictly decodes and validates a plan, reporting every problem.
func Parse(b []byte) (*Plan, error) {
	var p Plan
	if err := config.Decode(b, &p); err != nil {
		return nil, fmt.Errorf("ASK plan: %w", err)
	}
	if p.MaxDuration == 0 {
		p.MaxDuration = config.Duration(DefaultMaxDuration)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("ASK plan: %w", err)
	}
	return &p, nil
}

// Validate reports every problem at once.
func (p *Plan) Validate() error {
	var errs []error
	if p.Version != Version {
		errs = append(errs, fmt.Errorf("version %d (this build reads %d)", p.Version, Version))
	}
	if p.CPUs < 0 || p.CPUs > 4096 {
		errs = append(errs, fmt.Errorf("cpus %v out of range", p.CPUs))
	}
	if p.MemoryMB < 0 || p.MemoryMB > 64<<20 {
		errs = append(errs, fmt.Errorf("memory_mb %d out of range", p.MemoryMB))
	}
	if p.GPUs < 0 || p.GPUs > 1024 {
		errs = append(errs, fmt.Errorf("gpus %d out of range", p.GPUs))
	}
	if p.MaxDuration < 0 {
		errs = append(errs, errors.New("max_duration is negative"))
	}
	if !currency.MatchString(p.Price.Currency) {
		errs = append(errs, fmt.Errorf("price currency %q: want an ISO 4217 code such as USD", p.Price.Currency))
	}
	if p.Price.PerGPU < 0 || p.Price.PerCPU < 0 || p.Price.PerGB < 0 {
		errs = append(errs, errors.New("negative price"))
	}
	return errors.Join(errs...)
}
