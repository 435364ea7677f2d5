// Package apiv1 is the Go code generated from pkg/api/rigos.proto (the
// rigos.api.v1 protocol). Do not edit the .pb.go files: run make generate.
package apiv1
