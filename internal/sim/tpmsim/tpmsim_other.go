//go:build !cgo

package tpmsim

import (
	"errors"
	"io"
)

// Available reports whether this binary was built with the
// go-tpm-tools simulator (it needs cgo).
const Available = false

// Open is unavailable without cgo.
func Open(seed int64) (io.ReadWriteCloser, error) {
	return nil, errors.New("TPM simulator not built in (needs cgo)")
}
