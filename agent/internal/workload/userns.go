package workload

import (
	"errors"
	"sync"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// Every workload runs in a user namespace of its own: its root (uid and
// gid 0) and every other ID it uses are a range of IDsPerWorkload IDs on
// the node that no other workload, and nothing of the node, ever holds.
// A process that escapes its container is an unprivileged stranger to
// the node and to every other workload's files. The image's files are
// shown to it through an idmapped mount (no copy, no chown).
const (
	// IDsPerWorkload is the size of each workload's ID range (a full
	// 16-bit range: images expect nobody at 65534).
	IDsPerWorkload = 1 << 16
	// FirstWorkloadID is the node-side ID of the first range's 0; the
	// node's own IDs stay far below it.
	FirstWorkloadID = 1 << 20
	// MaxIDRanges bounds the workloads running at once.
	MaxIDRanges = 4096
)

// idRanges hands out the ID ranges of running workloads.
type idRanges struct {
	mu    sync.Mutex
	inUse map[uint32]bool // range index
}

// errNoIDRange means every range is in use.
var errNoIDRange = errors.New("no user-namespace ID range left for another workload")

// take returns the node-side base of a free range and the function that
// gives it back.
func (r *idRanges) take() (uint32, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inUse == nil {
		r.inUse = map[uint32]bool{}
	}
	for i := uint32(0); i < MaxIDRanges; i++ {
		if !r.inUse[i] {
			r.inUse[i] = true
			return FirstWorkloadID + i*IDsPerWorkload, func() {
				r.mu.Lock()
				delete(r.inUse, i)
				r.mu.Unlock()
			}, nil
		}
	}
	return 0, nil, errNoIDRange
}

// idMap maps a workload's 0..IDsPerWorkload-1 onto base.
func idMap(base uint32) []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: IDsPerWorkload}}
}
