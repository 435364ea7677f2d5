// Package kmod resolves kernel modules and their dependencies from an
// unpacked kernel package, which carries no modules.dep: the
// dependencies are read from each module's .modinfo ELF section.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Module is one resolved module file.
type Module struct {
	Name string // canonical name: '-' written as '_'
	Path string // relative to the modules root, e.g. kernel/drivers/...
	Deps []string
}

// Canonical returns the kernel's canonical module name.
func Canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Index maps canonical names to module files under root
// (lib/modules/RELEASE).
func Index(root string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(filepath.Join(root, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(root, p)
			idx[Canonical(strings.TrimSuffix(d.Name(), ".ko"))] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules: %w", err)
	}
	return idx, nil
}

// ParseModinfo returns the key=value pairs of a .modinfo section (NUL
// separated). Repeated keys keep every value.
func ParseModinfo(b []byte) map[string][]string {
	out := map[string][]string{}
	for _, f := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(f, []byte{'='})
		if ok && len(k) > 0 {
			out[string(k)] = append(out[string(k)], string(v))
		}
	}
	return out
}

// Depends reads a module file's hard dependencies.
func Depends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", path)
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .modinfo of %s: %w", path, err)
	}
	var deps []string
	for _, v := range ParseModinfo(b)["depends"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, Canonical(d))
			}
		}
	}
	return deps, nil
}

// Resolve returns want and all their dependencies in load order
// (dependencies first). builtin names (from modules.builtin) need no
// file. An unknown module is an error naming it.
func Resolve(root string, want []string) ([]Module, error) {
	idx, err := Index(root)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(root, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			builtin[Canonical(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
		}
	}
	var (
		out   []Module
		state = map[string]int{} // 1 visiting, 2 done
		visit func(name, from string) error
	)
	visit = func(name, from string) error {
		name = Canonical(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		path, ok := idx[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) not found", name, from)
			}
			return fmt.Errorf("module %s not found in %s", name, root)
		}
		state[name] = 1
		deps, err := Depends(filepath.Join(root, path))
		if err != nil {
			return err
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: path, Deps: deps})
		return nil
	}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}
