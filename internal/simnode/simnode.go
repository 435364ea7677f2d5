// Package simnode runs a simulated RigOS node for tests, benchmarks and
// the demo: the go-tpm-tools TPM simulator after a simulated measured
// boot (package devboot), the boot-phase markers init would record, and
// an Attestor over it. The simulator is a process-wide singleton: one
// Node at a time.
package simnode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rigos/rigos/pkg/attestation/collect"
	"github.com/rigos/rigos/pkg/devboot"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
)

// Phases are the boot-phase markers a simulated init records.
var Phases = []string{measure.PhaseEnterInitrd, measure.PhaseModulesLocked, measure.PhaseStartAgent}

// Node is a booted simulated node.
type Node struct {
	Sim        io.ReadWriteCloser
	Boot       devboot.Boot
	Att        *collect.Attestor
	Recorder   *measure.Recorder
	RuntimeLog string // path of the runtime log
}

// Start boots a simulated node whose TPM has the given seed (the seed
// fixes the EK) with cfg, recording the runtime log under dir.
func Start(seed int64, cfg devboot.Config, dir string) (*Node, error) {
	sim, err := tpm.OpenSimulator(seed)
	if err != nil {
		return nil, err
	}
	n := &Node{Sim: sim, Boot: devboot.Simulate(cfg), RuntimeLog: filepath.Join(dir, "runtime.cel")}
	if err := n.Boot.ExtendInto(sim); err != nil {
		sim.Close()
		return nil, fmt.Errorf("simulating boot: %w", err)
	}
	_ = os.Remove(n.RuntimeLog)
	n.Att, err = collect.Open(tpm.WithLog(sim, n.Boot.Log.Bytes()), nil)
	if err != nil {
		sim.Close()
		return nil, err
	}
	n.Recorder, err = measure.NewRecorder(n.RuntimeLog, n.Att.Extend)
	if err == nil {
		for _, p := range Phases {
			if _, err = n.Recorder.Record(measure.KindPhase, []byte(p)); err != nil {
				break
			}
		}
	}
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// ReadRuntimeLog returns the runtime log's current contents.
func (n *Node) ReadRuntimeLog() ([]byte, error) { return os.ReadFile(n.RuntimeLog) }

// Close shuts the node down and frees the simulator.
func (n *Node) Close() error {
	var errs []error
	if n.Att != nil {
		errs = append(errs, n.Att.Close())
	}
	return errors.Join(append(errs, n.Sim.Close())...)
}
