// Package apiv1 is the Go code generated from pkg/api/rigos.proto (the
// rigos.api.v1 protocol). Do not edit the .pb.go files: run make generate.
// Hand-written methods sit beside them: state names (names.go) and the
// workload request checks and limits every side shares (validate.go), and
// the bounds of a node's hardware inventory (hardware.go).
package apiv1
