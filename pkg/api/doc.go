// Package api holds the RigOS wire protocol (rigos.proto) shared by the
// agent and the verifier. The generated Go code is in apiv1; regenerate it
// with `make generate`.
package api

//go:generate protoc --go_out=apiv1 --go_opt=paths=source_relative --go-grpc_out=apiv1 --go-grpc_opt=paths=source_relative rigos.proto
