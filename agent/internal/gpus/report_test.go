package gpus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/gpu"
	"github.com/rigos/rigos/pkg/session"
)

// fakeSource is one healthy GPU, without NVML.
type fakeSource struct{}

var _ Source = fakeSource{}

func (fakeSource) Inventory() ([]gpu.GPU, error) {
	return []gpu.GPU{{Index: 0, UUID: "GPU-0", Name: "fake", Minor: 0}}, nil
}
func (fakeSource) Health() ([]gpu.Health, error) {
	return []gpu.Health{{UUID: "GPU-0", Healthy: true}}, nil
}
func (fakeSource) WatchXids(ctx context.Context) error { <-ctx.Done(); return nil }

// The service reports to the session's outbox on its own: a report on
// every session that attaches, none kept while detached.
func TestReportToOutbox(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, fakeSource{}, func(string, []byte) error { return nil }, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := session.NewOutbox(nil)
	s.ReportTo(ctx, out, time.Hour)
	got := make(chan *apiv1.GPUReport, 4)
	send := func(m *apiv1.AgentMessage) error { got <- m.GetGpuReport(); return nil }
	for i := range 2 {
		out.Attach(send)
		select {
		case r := <-got:
			if len(r.GetGpus()) != 1 || !r.GetGpus()[0].GetHealthy() {
				t.Errorf("session %d: report %v, want one healthy GPU", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: no GPU report within 10s of attaching", i)
		}
		out.Attach(nil)
	}
	if n := out.Pending(); n != 0 {
		t.Errorf("outbox keeps %d GPU reports while detached, want none", n)
	}
}
