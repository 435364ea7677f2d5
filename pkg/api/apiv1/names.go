package apiv1

import "strings"

// Name is the state's lower-case name ("trusted"), as the verifier
// stores and the tools print it.
func (s NodeState) Name() string { return enumName(s.String(), "NODE_STATE_") }

// Name is the state's lower-case name ("running"), as the verifier
// stores and the tools print it.
func (s WorkloadState) Name() string { return enumName(s.String(), "WORKLOAD_STATE_") }

// WorkloadStateByName is the inverse of WorkloadState.Name
// (WORKLOAD_STATE_UNSPECIFIED for an unknown name).
func WorkloadStateByName(name string) WorkloadState {
	return WorkloadState(WorkloadState_value["WORKLOAD_STATE_"+strings.ToUpper(name)])
}

func enumName(s, prefix string) string {
	n, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "unknown(" + s + ")"
	}
	return strings.ToLower(n)
}
