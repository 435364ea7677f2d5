package installer

import "golang.org/x/sys/unix"

// remountESP remounts the ESP mounted on dir read-only or writable,
// keeping init's other mount flags.
func remountESP(dir string, readOnly bool) error {
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return unix.Mount("", dir, "", flags, "")
}
