//go:build !linux

package efiboot

import "errors"

// ClearImmutable needs Linux's efivarfs.
func ClearImmutable(string) error { return errors.New("efivarfs needs Linux") }

// Writable needs Linux's efivarfs.
func Writable(string, func() error) error { return errors.New("efivarfs needs Linux") }
