package tpm

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Read waits until the TPM has a response, then reads it. The kernel's
// TPM devices answer a read issued before the response is ready with
// nothing, which the TPM libraries take for EOF.
func (d *device) Read(p []byte) (int, error) {
	fds := []unix.PollFd{{Fd: int32(d.Fd()), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	return d.File.Read(p)
}
