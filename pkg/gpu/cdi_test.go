package gpu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Files in a fake user-space driver folder: the libraries by their file
// name and soname (those of Debian's 550.163.01 packages), nvidia-smi,
// and files FindUserSpace must leave out.
var fakeLibraries = []struct{ file, soname string }{
	{"libcuda.so.550.163.01", "libcuda.so.1"},
	{"libcudadebugger.so.550.163.01", "libcudadebugger.so.1"},
	{"libnvidia-gpucomp.so.550.163.01", "libnvidia-gpucomp.so.550.163.01"},
	{"libnvidia-ml.so.550.163.01", "libnvidia-ml.so.1"},
	{"libnvidia-nvvm.so.550.163.01", "libnvidia-nvvm.so.4"},
	{"libnvidia-ptxjitcompiler.so.550.163.01", "libnvidia-ptxjitcompiler.so.1"},
}

// needGCC returns gcc's path, or skips the test: the fake libraries are
// real ELF shared objects gcc builds.
func needGCC(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build ELF shared objects with: skipping")
	}
	return gcc
}

// gccBuild runs gcc with args on an empty C file, writing out.
func gccBuild(t *testing.T, gcc, out string, args ...string) {
	t.Helper()
	args = append(args, "-nostdlib", "-o", out, "-x", "c", os.DevNull)
	if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// sharedObject builds an empty x86-64 shared object at out, with soname
// as its DT_SONAME unless soname is empty.
func sharedObject(t *testing.T, gcc, out, soname string) {
	t.Helper()
	args := []string{"-shared"}
	if soname != "" {
		args = append(args, "-Wl,-soname,"+soname)
	}
	gccBuild(t, gcc, out, args...)
}

// fakeUserSpace builds a user-space driver folder like the one the image
// carries, plus files that are not libraries: a text file, an object file
// (ELF, not shared), a shared object with no soname, a symbolic link to
// a library, and a non-executable file in bin. It returns the folder and
// the UserSpace FindUserSpace should find there.
func fakeUserSpace(t *testing.T) (string, UserSpace) {
	t.Helper()
	gcc := needGCC(t)
	dir := t.TempDir()
	lib, bin := filepath.Join(dir, "lib"), filepath.Join(dir, "bin")
	for _, d := range []string{lib, bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var want UserSpace
	for _, l := range fakeLibraries {
		p := filepath.Join(lib, l.file)
		sharedObject(t, gcc, p, l.soname)
		want.Libraries = append(want.Libraries, Library{Path: p, Soname: l.soname})
	}
	sharedObject(t, gcc, filepath.Join(lib, "libnosoname.so"), "")
	gccBuild(t, gcc, filepath.Join(lib, "empty.o"), "-c")
	if err := os.Symlink("libcuda.so.550.163.01", filepath.Join(lib, "libcuda.so.1")); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		filepath.Join(lib, "README"):     "not a library\n",
		filepath.Join(lib, "tiny"):       "\x7fE",
		filepath.Join(bin, "nvidia-smi"): "#!/bin/sh\n",
		filepath.Join(bin, "notes.txt"):  "not executable\n",
	} {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "nvidia-smi") {
			mode = 0o755
		}
		if err := os.WriteFile(name, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	want.Executables = []string{filepath.Join(bin, "nvidia-smi")}
	want.Skipped = []string{
		filepath.Join(bin, "notes.txt") + ": not an executable file",
		filepath.Join(lib, "README") + ": not an ELF file",
		filepath.Join(lib, "empty.o") + ": not a shared object (ET_REL)",
		filepath.Join(lib, "libcuda.so.1") + ": not a regular file",
		filepath.Join(lib, "libnosoname.so") + ": no soname",
		filepath.Join(lib, "tiny") + ": not an ELF file",
	}
	return dir, want
}

func TestFindUserSpace(t *testing.T) {
	dir, want := fakeUserSpace(t)
	got, err := FindUserSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FindUserSpace(%s) (-want +got):\n%s", dir, diff)
	}
}

// No folder, or no library in it: the caller is told, and the zero
// UserSpace gives a spec with device nodes only.
func TestFindUserSpaceNone(t *testing.T) {
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "README"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noLibs := t.TempDir()
	if err := os.Mkdir(filepath.Join(noLibs, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(noLibs, "lib", "README"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(t.TempDir(), "missing"), empty, noLibs} {
		got, err := FindUserSpace(dir)
		if !errors.Is(err, ErrNoUserSpace) {
			t.Errorf("FindUserSpace(%s) error = %v, want %v", dir, err, ErrNoUserSpace)
		}
		if diff := cmp.Diff(UserSpace{}, got); diff != "" {
			t.Errorf("FindUserSpace(%s) = %+v, want the zero UserSpace", dir, got)
		}
	}
}

// A broken folder is an error, not a spec that half works.
func TestFindUserSpaceBroken(t *testing.T) {
	gcc := needGCC(t)
	for _, tc := range []struct {
		name    string
		build   func(lib string)
		wantErr string
	}{{
		name: "two libraries with one soname",
		build: func(lib string) {
			sharedObject(t, gcc, filepath.Join(lib, "libcuda.so.550.163.01"), "libcuda.so.1")
			sharedObject(t, gcc, filepath.Join(lib, "libcuda.so.550.54.15"), "libcuda.so.1")
		},
		wantErr: "both have soname libcuda.so.1",
	}, {
		name: "a soname that leaves the folder",
		build: func(lib string) {
			sharedObject(t, gcc, filepath.Join(lib, "libevil.so"), "../../bin/sh")
		},
		wantErr: `soname "../../bin/sh" is not a file name`,
	}, {
		name: "a truncated ELF file",
		build: func(lib string) {
			p := filepath.Join(lib, "libcuda.so.550.163.01")
			sharedObject(t, gcc, p, "libcuda.so.1")
			if err := os.Truncate(p, 40); err != nil {
				t.Fatal(err)
			}
		},
		wantErr: "libcuda.so.550.163.01: ",
	}} {
		dir := t.TempDir()
		lib := filepath.Join(dir, "lib")
		if err := os.Mkdir(lib, 0o755); err != nil {
			t.Fatal(err)
		}
		tc.build(lib)
		got, err := FindUserSpace(dir)
		if err == nil || errors.Is(err, ErrNoUserSpace) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: FindUserSpace = %+v, %v; want an error with %q", tc.name, got, err, tc.wantErr)
		}
	}
}
