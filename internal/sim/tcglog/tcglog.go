// Package tcglog writes TCG PC Client "crypto agile" event logs (the format
// of /sys/kernel/security/tpm0/binary_bios_measurements) with a SHA-256
// bank, and tracks the PCR values the logged events produce.
//
// It is the writing half only: RigOS verifies logs with go-attestation's
// parser. The writer is used to simulate a measured boot into a TPM
// simulator (package devboot) and to build adversarial logs in tests.
package tcglog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"

	"github.com/rigos/rigos/pkg/attestation/tcgevent"
)

const algSHA256 = 0x000b

// Log is an event log under construction. The zero value is not usable;
// call New.
type Log struct {
	buf  bytes.Buffer
	pcrs map[int][32]byte
}

// New starts a log with the Spec ID Event03 header announcing one bank,
// SHA-256.
func New() *Log {
	l := &Log{pcrs: map[int][32]byte{}}
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	le(&spec, uint32(0)) // platform class: client
	spec.WriteByte(0)    // spec version minor
	spec.WriteByte(2)    // spec version major
	spec.WriteByte(0)    // errata
	spec.WriteByte(2)    // uintn size: UINT64
	le(&spec, uint32(1)) // number of algorithms
	le(&spec, uint16(algSHA256))
	le(&spec, uint16(sha256.Size))
	spec.WriteByte(0) // vendor info size

	// The first event uses the legacy SHA-1 layout.
	le(&l.buf, uint32(0))
	le(&l.buf, tcgevent.EvNoAction)
	l.buf.Write(make([]byte, 20))
	le(&l.buf, uint32(spec.Len()))
	l.buf.Write(spec.Bytes())
	return l
}

// Measure logs data and extends PCR pcr with SHA-256(data). It returns the
// digest extended.
func (l *Log) Measure(pcr int, typ uint32, data []byte) []byte {
	d := sha256.Sum256(data)
	l.Append(pcr, typ, d[:], data)
	return d[:]
}

// Append logs an event whose digest is given (for events that measure
// something other than their own data, such as a PE image) and extends
// the tracked PCR with it. EV_NO_ACTION events are logged but not
// extended.
func (l *Log) Append(pcr int, typ uint32, digest, data []byte) {
	le(&l.buf, uint32(pcr))
	le(&l.buf, typ)
	le(&l.buf, uint32(1))
	le(&l.buf, uint16(algSHA256))
	d := make([]byte, sha256.Size)
	copy(d, digest)
	l.buf.Write(d)
	le(&l.buf, uint32(len(data)))
	l.buf.Write(data)
	if typ != tcgevent.EvNoAction {
		l.pcrs[pcr] = Extend(l.pcrs[pcr], d)
	}
}

// Bytes returns the encoded log so far.
func (l *Log) Bytes() []byte { return append([]byte(nil), l.buf.Bytes()...) }

// PCR returns the SHA-256 value PCR pcr has after the logged events.
func (l *Log) PCR(pcr int) []byte {
	v := l.pcrs[pcr]
	return v[:]
}

// PCRs returns the indices that have events.
func (l *Log) PCRs() []int {
	var out []int
	for i := 0; i < 24; i++ {
		if _, ok := l.pcrs[i]; ok {
			out = append(out, i)
		}
	}
	return out
}

// Extend returns SHA-256(pcr || digest).
func Extend(pcr [32]byte, digest []byte) [32]byte {
	h := sha256.New()
	h.Write(pcr[:])
	h.Write(digest)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func le(b *bytes.Buffer, v any) { _ = binary.Write(b, binary.LittleEndian, v) }
