package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/imager/uki"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/update"
)

// Updates is where Update finds builds: a folder holding, per build, a
// folder named for it with the imager's output (layout.BuildUKI for both
// slots, layout.BuildSystem), and the verifier's active manifests, one
// of which must name the build.
type Updates struct {
	Dir string
	// URL, if set, is where an HTTPS server serves Dir's folders: an
	// Update with fetch tells the node to fetch the build from there.
	URL       string
	Manifests func() []*attestation.Manifest
}

// SetUpdates enables Update.
func (s *Server) SetUpdates(u Updates) { s.updates = u }

// UpdateTimeout bounds an Update call: streaming, writing and reading
// back the build on the node.
const UpdateTimeout = 30 * time.Minute

// UpdateChunkSize is the size of the UpdateChunk messages.
const UpdateChunkSize = 1 << 20

var buildName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// bundle is a build's files, checked against its manifest.
type bundle struct {
	dir    string
	ukis   map[layout.Slot][]byte
	system *os.File
	req    *apiv1.Update
}

// openBundle reads and checks build's files: each UKI must be one of the
// manifest's boot applications and boot the slot it is named for.
func (u Updates) openBundle(build string) (*bundle, error) {
	if u.Dir == "" || u.Manifests == nil {
		return nil, status.Error(codes.FailedPrecondition, "this verifier has no update_dir: set it in its configuration to serve updates")
	}
	if !buildName.MatchString(build) {
		return nil, status.Errorf(codes.InvalidArgument, "build %q: want a build name (letters, digits, '.', '_', '-')", build)
	}
	i := slices.IndexFunc(u.Manifests(), func(m *attestation.Manifest) bool { return m.Build == build })
	if i < 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "build %s has no active manifest: add its manifest.json to the verifier's manifest_dir first (nodes on it would not be trusted)", build)
	}
	m := u.Manifests()[i]
	b := &bundle{dir: filepath.Join(u.Dir, build), ukis: map[layout.Slot][]byte{}, req: &apiv1.Update{Build: build}}
	for _, slot := range layout.Slots() {
		p := filepath.Join(b.dir, layout.BuildUKI(slot))
		data, err := readBounded(p, update.MaxUKI)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "build %s: %v", build, err)
		}
		d, err := uki.AuthenticodeDigest(data)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "build %s: %s: %v", build, p, err)
		}
		if !slices.Contains(m.BootApplications, hex.EncodeToString(d)) {
			return nil, status.Errorf(codes.FailedPrecondition, "build %s: %s is not one of its manifest's boot applications (a UKI from another build?)", build, p)
		}
		if got, err := update.UKISlot(bytes.NewReader(data)); err != nil || got != slot {
			return nil, status.Errorf(codes.FailedPrecondition, "build %s: %s boots slot %q (%v), want %s", build, p, got, err, slot)
		}
		b.ukis[slot] = data
	}
	sumA, sumB := sha256.Sum256(b.ukis[layout.SlotA]), sha256.Sum256(b.ukis[layout.SlotB])
	b.req.UkiASize, b.req.UkiASha256 = int64(len(b.ukis[layout.SlotA])), sumA[:]
	b.req.UkiBSize, b.req.UkiBSha256 = int64(len(b.ukis[layout.SlotB])), sumB[:]
	f, err := os.Open(filepath.Join(b.dir, layout.BuildSystem))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "build %s: %v", build, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil || n == 0 {
		f.Close()
		return nil, status.Errorf(codes.FailedPrecondition, "build %s: reading %s: %d bytes, %v", build, f.Name(), n, err)
	}
	b.system, b.req.SystemSize, b.req.SystemSha256 = f, n, h.Sum(nil)
	return b, nil
}

func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, limit)
	}
	return data, nil
}

// Update implements Admin: it checks the build's files against its
// active manifest, sends the node the Update, streams the files for the
// slot the node names and returns the node's last event: WAITING (for
// workloads to end), REBOOTING or FAILED.
func (s *Server) Update(ctx context.Context, r *apiv1.UpdateRequest) (*apiv1.UpdateEvent, error) {
	if _, err := s.store.GetNode(ctx, r.GetNodeId()); err != nil {
		return nil, grpcErr(err)
	}
	if r.GetFetch() && s.updates.URL == "" {
		return nil, status.Error(codes.FailedPrecondition, "this verifier has no update_url: set it in its configuration for nodes to fetch updates over HTTPS, or stream the update (no -fetch)")
	}
	b, err := s.updates.openBundle(r.GetBuild())
	if err != nil {
		return nil, err
	}
	defer b.system.Close()
	if r.GetFetch() {
		b.req.Url = strings.TrimSuffix(s.updates.URL, "/") + "/" + url.PathEscape(r.GetBuild())
	}
	c := s.hub.Conn(r.GetNodeId())
	if c == nil {
		return nil, status.Errorf(codes.Unavailable, "node %s is not connected", r.GetNodeId())
	}
	ctx, cancel := context.WithTimeout(ctx, UpdateTimeout)
	defer cancel()
	events, stop := s.hub.WatchUpdate(r.GetNodeId())
	defer stop()
	b.req.RequestId, b.req.Force = rand.Text(), r.GetForce()
	if err := c.Send(ctx, r.GetNodeId(), &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_Update{Update: b.req}}); err != nil {
		return nil, err
	}
	// next returns the call's next event; done reports a final one.
	next := func(block bool) (*apiv1.UpdateEvent, error) {
		for {
			var t <-chan time.Time
			if !block {
				t = time.After(0)
			}
			select {
			case e := <-events:
				if e.GetRequestId() == b.req.GetRequestId() {
					return e, nil
				}
			case <-c.Gone():
				return nil, status.Errorf(codes.Unavailable, "node %s disconnected during the update; attest node %s shows its last update event", r.GetNodeId(), r.GetNodeId())
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return nil, status.Errorf(codes.DeadlineExceeded, "node %s did not finish the update within %s; attest node %s shows its last update event", r.GetNodeId(), UpdateTimeout, r.GetNodeId())
				}
				return nil, ctx.Err()
			case <-t:
				return nil, nil
			}
		}
	}
	e, err := next(true)
	if err != nil || e.GetState() == apiv1.UpdateState_UPDATE_STATE_FAILED {
		return e, err
	}
	if e.GetState() != apiv1.UpdateState_UPDATE_STATE_RECEIVING {
		return nil, status.Errorf(codes.Internal, "node %s answered the update with %s, not RECEIVING or FAILED", r.GetNodeId(), e.GetState())
	}
	// Issued once the node took it: a node that refused this one (an
	// update already running) keeps its running one's.
	s.hub.IssueUpdate(r.GetNodeId(), b.req.GetRequestId())
	slot, err := layout.ParseSlot(e.GetSlot())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node %s: %v", r.GetNodeId(), err)
	}
	if b.req.GetUrl() != "" {
		return waitFinal(next) // the node fetches the files itself
	}
	send := func(part apiv1.UpdatePart, off int64, data []byte) error {
		return c.Send(ctx, r.GetNodeId(), &apiv1.VerifierMessage{Msg: &apiv1.VerifierMessage_UpdateChunk{UpdateChunk: &apiv1.UpdateChunk{
			RequestId: b.req.GetRequestId(), Part: part, Offset: off, Data: data,
		}}})
	}
	for off := int64(0); off < b.req.GetSystemSize(); {
		// A buffer per chunk: the message is marshalled after Send queues it.
		buf := make([]byte, min(UpdateChunkSize, b.req.GetSystemSize()-off))
		n, err := b.system.ReadAt(buf, off)
		if n < len(buf) && (err == nil || errors.Is(err, io.EOF)) {
			err = fmt.Errorf("it is shorter than when it was hashed (%d bytes at %d, want %d)", n, off, len(buf))
		}
		if n < len(buf) {
			return nil, status.Errorf(codes.Internal, "reading the system image: %v", err)
		}
		if err := send(apiv1.UpdatePart_UPDATE_PART_SYSTEM, off, buf[:n]); err != nil {
			return nil, err
		}
		off += int64(n)
		// A node that failed stops the stream.
		if e, err := next(false); err != nil || e.GetState() == apiv1.UpdateState_UPDATE_STATE_FAILED {
			return e, err
		}
	}
	data := b.ukis[slot]
	for off := 0; off < len(data); off += UpdateChunkSize {
		if err := send(apiv1.UpdatePart_UPDATE_PART_UKI, int64(off), data[off:min(off+UpdateChunkSize, len(data))]); err != nil {
			return nil, err
		}
	}
	return waitFinal(next)
}

// waitFinal returns the update's next WAITING, REBOOTING or FAILED.
func waitFinal(next func(block bool) (*apiv1.UpdateEvent, error)) (*apiv1.UpdateEvent, error) {
	for {
		e, err := next(true)
		if err != nil {
			return nil, err
		}
		switch e.GetState() {
		case apiv1.UpdateState_UPDATE_STATE_WAITING, apiv1.UpdateState_UPDATE_STATE_REBOOTING, apiv1.UpdateState_UPDATE_STATE_FAILED:
			return e, nil
		}
	}
}
