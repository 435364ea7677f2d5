//go:build !cgo

package gpu

import "context"

// Monitor is unavailable without cgo.
type Monitor struct{}

// Open reports ErrNoDriver: NVML needs cgo.
func Open(_ any, _ Limits) (*Monitor, error) { return nil, ErrNoDriver }

// Close does nothing.
func (m *Monitor) Close() error { return nil }

// Inventory is never reached without cgo.
func (m *Monitor) Inventory() ([]GPU, error) { return nil, ErrNoDriver }

// Health is never reached without cgo.
func (m *Monitor) Health() ([]Health, error) { return nil, ErrNoDriver }

// WatchXids is never reached without cgo.
func (m *Monitor) WatchXids(context.Context) error { return ErrNoDriver }
