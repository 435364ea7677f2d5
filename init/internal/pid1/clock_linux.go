package pid1

import (
	"time"

	"golang.org/x/sys/unix"
)

// setClockFloor makes sure the clock is not before the image was built,
// so certificate checks work on a machine with a flat RTC battery.
func setClockFloor(build int64) {
	if build == 0 || time.Now().Unix() >= build {
		return
	}
	tv := unix.NsecToTimeval(time.Unix(build, 0).UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		say("clock: %v", err)
		return
	}
	say("clock was before the build time; set to %s", time.Unix(build, 0).UTC().Format(time.RFC3339))
}
