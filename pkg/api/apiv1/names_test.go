package apiv1

import "testing"

func TestNames(t *testing.T) {
	if n := NodeState_NODE_STATE_UNTRUSTED.Name(); n != "untrusted" {
		t.Errorf("NodeState name %q", n)
	}
	for v := range WorkloadState_name {
		s := WorkloadState(v)
		if got := WorkloadStateByName(s.Name()); got != s {
			t.Errorf("%v: name %q maps back to %v", s, s.Name(), got)
		}
	}
	if n := WorkloadState(99).Name(); n != "unknown(99)" {
		t.Errorf("unknown state name %q", n)
	}
	if s := WorkloadStateByName("bogus"); s != WorkloadState_WORKLOAD_STATE_UNSPECIFIED {
		t.Errorf("unknown name maps to %v", s)
	}
}
