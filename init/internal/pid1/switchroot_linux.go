package pid1

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// rootEnv marks an init that already runs from the tmpfs root.
const rootEnv = "RIGOS_ROOT=tmpfs"

// switchRoot moves init from the initramfs (rootfs, which cannot be
// pivot_root'ed away from) onto a tmpfs that becomes the root, then
// execs /init again there. Container runtimes jail containers with
// pivot_root; on rootfs they could only chroot, which a process with
// CAP_SYS_CHROOT escapes. It returns only when the switch already
// happened.
func switchRoot() error {
	for _, e := range os.Environ() {
		if e == rootEnv {
			return nil
		}
	}
	const newRoot = "/newroot"
	if err := os.Mkdir(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mounting the new root: %w", err)
	}
	var rootSt unix.Stat_t
	if err := unix.Lstat("/", &rootSt); err != nil {
		return err
	}
	// Copy the initramfs over, then free it (its files live in memory).
	var moved []string
	err := filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "/" {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Dev != rootSt.Dev { // another file system (the new root)
			return fs.SkipDir
		}
		dst := filepath.Join(newRoot, p)
		mode := uint32(st.Mode)
		switch {
		case d.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			return os.Chmod(dst, fs.FileMode(mode&0o7777))
		case d.Type().IsRegular():
			if err := copyFile(p, dst, fs.FileMode(mode&0o7777)); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dst); err != nil {
				return err
			}
		default: // device nodes (/dev/console)
			if err := unix.Mknod(dst, mode, int(st.Rdev)); err != nil {
				return err
			}
		}
		moved = append(moved, p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("copying the initramfs: %w", err)
	}
	for i := len(moved) - 1; i >= 0; i-- {
		_ = os.Remove(moved[i])
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the new root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec("/init", os.Args, append(os.Environ(), rootEnv))
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}
