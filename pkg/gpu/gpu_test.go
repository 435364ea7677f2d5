package gpu

import (
	"slices"
	"testing"
)

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		h       Health
		healthy bool
	}{
		{Health{TemperatureC: 70}, true},
		{Health{TemperatureC: 95}, false},
		{Health{ECCUncorrected: 1}, false},
		{Health{Xids: []uint64{13}}, true}, // graphics engine exception: the workload's fault
		{Health{Xids: []uint64{48}}, false},
	} {
		h := tc.h
		h.Evaluate(Limits{})
		if h.Healthy != tc.healthy {
			t.Errorf("Evaluate(%+v) healthy = %v, want %v", tc.h, h.Healthy, tc.healthy)
		}
	}
	h := Health{TemperatureC: 85}
	h.Evaluate(Limits{MaxTemperatureC: 80, FatalXids: []uint64{}})
	if h.Healthy || !slices.Contains(h.Problems, "temperature 85 °C above 80 °C") {
		t.Errorf("custom limits: %+v", h)
	}
}
