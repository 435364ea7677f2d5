//go:build !linux

package installer

import "errors"

func remountESP(string, bool) error { return errors.New("updates need Linux") }
