// Package simnode runs a simulated RigOS node for tests, benchmarks and
// the demo: the go-tpm-tools TPM simulator after a simulated measured
// boot (package devboot), the boot-phase markers init would record, and
// an Attestor over it. The simulator is a process-wide singleton: one
// Node at a time.
package simnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/tpmsim"
	"github.com/rigos/rigos/pkg/attestation/collect"
	"github.com/rigos/rigos/pkg/attestation/tcgevent"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
)

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
	sim, err := tpmsim.Open(seed)
	if err != nil {
		return nil, err
	}
	n := &Node{Sim: sim, RuntimeLog: filepath.Join(dir, "runtime.cel")}
	if err := n.boot(cfg, nil); err != nil {
		sim.Close()
		return nil, err
	}
	return n, nil
}

// nopCloser keeps the attestor from closing the shared simulator.
type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

func (n *Node) boot(cfg devboot.Config, akBlob []byte) error {
	n.Boot = devboot.Simulate(cfg)
	if err := extendBoot(n.Sim, n.Boot); err != nil {
		return fmt.Errorf("simulating boot: %w", err)
	}
	_ = os.Remove(n.RuntimeLog)
	att, err := collect.Open(tpm.WithLog(nopCloser{n.Sim}, n.Boot.Log.Bytes()), akBlob)
	if err != nil {
		return err
	}
	n.Att = att
	n.Recorder, err = measure.NewRecorder(n.RuntimeLog, n.Att.Extend)
	if err != nil {
		return err
	}
	for _, p := range measure.BootPhases {
		if _, err := n.Recorder.Record(measure.KindPhase, []byte(p)); err != nil {
			return err
		}
	}
	return nil
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

// extendBoot extends every PCR the boot touched into the TPM behind rw,
// as firmware would have. The TPM's PCRs must be fresh (after reset).
func extendBoot(rw io.ReadWriter, b devboot.Boot) error {
	return replayInto(rw, b.Log.Bytes())
}

// replayInto parses a log written by tcglog and extends its SHA-256
// digests into the TPM behind rw.
func replayInto(rw io.ReadWriter, log []byte) error {
	r := bytes.NewReader(log)
	var hdr struct {
		PCR, Type uint32
		Digest    [20]byte
		Size      uint32
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return fmt.Errorf("reading spec ID event: %w", err)
	}
	if _, err := r.Seek(int64(hdr.Size), io.SeekCurrent); err != nil {
		return err
	}
	for r.Len() > 0 {
		var e struct {
			PCR, Type, Count uint32
			Alg              uint16
			Digest           [32]byte
			Size             uint32
		}
		if err := binary.Read(r, binary.LittleEndian, &e); err != nil {
			return fmt.Errorf("reading event: %w", err)
		}
		if _, err := r.Seek(int64(e.Size), io.SeekCurrent); err != nil {
			return err
		}
		if e.Type == tcgevent.EvNoAction {
			continue
		}
		if err := tpm.Extend(rw, int(e.PCR), e.Digest[:]); err != nil {
			return err
		}
	}
	return nil
}
