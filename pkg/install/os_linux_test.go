package install

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Two device nodes for one device are the same disk; another device, or
// a plain file, is not.
func TestSameDisk(t *testing.T) {
	dir := t.TempDir()
	alias, other := filepath.Join(dir, "null"), filepath.Join(dir, "zero")
	if err := unix.Mknod(alias, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("mknod needs root: %v", err)
	}
	if err := unix.Mknod(other, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))); err != nil {
		t.Fatal(err)
	}
	stat := func(p string) os.FileInfo {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	if !sameDisk(stat("/dev/null"), stat(alias)) {
		t.Error("two nodes of one device are not the same disk")
	}
	if sameDisk(stat("/dev/null"), stat(other)) {
		t.Error("two devices are the same disk")
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if sameDisk(stat(plain), stat(alias)) || !sameDisk(stat(plain), stat(plain)) {
		t.Error("plain files compared wrongly")
	}
}
