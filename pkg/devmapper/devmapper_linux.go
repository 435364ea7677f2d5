package devmapper

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control device.
const ControlPath = "/dev/mapper/control"

func ioctl(f *os.File, cmd uintptr, buf []byte) error {
	req := uintptr(3<<30|ioctlSize<<16|0xfd<<8) | cmd
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return e
	}
	return nil
}

// CreateReadOnly creates device name with targets, loads the table
// read-only, activates it and returns the block device path (/dev/dm-N).
func CreateReadOnly(name string, targets []Target) (string, error) {
	return create(name, flagReadOnly, targets)
}

// Create is CreateReadOnly for a writable device (dm-crypt).
func Create(name string, targets []Target) (string, error) {
	return create(name, 0, targets)
}

func create(name string, tableFlags uint32, targets []Target) (string, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("opening device-mapper control: %w", err)
	}
	defer f.Close()
	buf, err := encode(name, 0, nil)
	if err != nil {
		return "", err
	}
	if err := ioctl(f, cmdDevCreate, buf); err != nil {
		return "", fmt.Errorf("creating %s: %w", name, err)
	}
	dev, err := decodeDev(buf)
	if err != nil {
		return "", err
	}
	if buf, err = encode(name, tableFlags, targets); err != nil {
		return "", err
	}
	if err := ioctl(f, cmdTableLoad, buf); err != nil {
		return "", fmt.Errorf("loading the %s table: %w", name, err)
	}
	if buf, err = encode(name, 0, nil); err != nil {
		return "", err
	}
	if err := ioctl(f, cmdDevSuspend, buf); err != nil { // without the suspend flag: resume
		return "", fmt.Errorf("activating %s: %w", name, err)
	}
	path := fmt.Sprintf("/dev/dm-%d", unix.Minor(dev))
	for i := 0; i < 100; i++ { // devtmpfs creates the node asynchronously
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("%s did not appear", path)
}

// Table returns the table of device name, crypt keys included (root
// only): the agent reads the state volume's key to seal its passphrase
// for the build it updates to.
func Table(name string) ([]Target, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening device-mapper control: %w", err)
	}
	defer f.Close()
	buf, err := statusBuffer(name, 16<<10)
	if err != nil {
		return nil, err
	}
	if err := ioctl(f, cmdTableStatus, buf); err != nil {
		return nil, fmt.Errorf("reading the %s table: %w", name, err)
	}
	return decodeTable(buf)
}
