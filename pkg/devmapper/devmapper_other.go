//go:build !linux

package devmapper

import "errors"

// CreateReadOnly needs Linux.
func CreateReadOnly(name string, targets []Target) (string, error) {
	return "", errors.New("device-mapper needs Linux")
}

// Create needs Linux.
func Create(name string, targets []Target) (string, error) {
	return "", errors.New("device-mapper needs Linux")
}

// Table needs Linux.
func Table(string) ([]Target, error) { return nil, errors.New("device-mapper needs Linux") }
