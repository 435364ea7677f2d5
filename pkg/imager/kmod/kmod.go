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
	"slices"
	"sort"
	"strings"
)

// Module is one resolved module file.
type Module struct {
	Name string // canonical name: '-' written as '_'
	Path string // relative to the modules root, e.g. kernel/drivers/...
	Deps []string
	// Devices are the module's hardware aliases (modalias patterns such
	// as "pci:v00001AF4d*"); empty for file systems and libraries.
	Devices []string
	// Wanted is set for modules asked for, not only needed by another.
	Wanted bool
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

// Depends reads a module file's hard dependencies and the modules it
// asks to have loaded first (softdep "pre:"), which may be aliases.
func Depends(path string) (deps, pre []string, err error) {
	info, err := modinfo(path)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range info["depends"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, Canonical(d))
			}
		}
	}
	for _, v := range info["softdep"] {
		inPre := false
		for _, f := range strings.Fields(v) {
			switch f {
			case "pre:":
				inPre = true
			case "post:":
				inPre = false
			default:
				if inPre {
					pre = append(pre, f)
				}
			}
		}
	}
	return deps, pre, nil
}

// Modinfo reads a module file's .modinfo section (see ParseModinfo).
func Modinfo(path string) (map[string][]string, error) { return modinfo(path) }

func modinfo(path string) (map[string][]string, error) {
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
	return ParseModinfo(b), nil
}

// aliases maps module aliases (such as "crypto-crc32c") to module names,
// for the modules in idx and the built-in ones (modules.builtin.modinfo).
func aliases(root string, idx map[string]string) (map[string]string, error) {
	out := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(root, "modules.builtin.modinfo")); err == nil {
		for _, f := range bytes.Split(b, []byte{0}) {
			mod, rest, ok := bytes.Cut(f, []byte{'.'})
			if k, v, ok2 := bytes.Cut(rest, []byte{'='}); ok && ok2 && string(k) == "alias" {
				out[string(v)] = Canonical(string(mod))
			}
		}
	}
	names := make([]string, 0, len(idx))
	for name := range idx {
		names = append(names, name)
	}
	sort.Strings(names) // several modules can share an alias: pick the same one every build
	for _, name := range names {
		info, err := modinfo(filepath.Join(root, idx[name]))
		if err != nil {
			return nil, err
		}
		for _, a := range info["alias"] {
			if _, taken := out[a]; !taken {
				out[a] = name
			}
		}
	}
	return out, nil
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
		alias map[string]string
	)
	// resolveSoft turns a soft dependency (a module or an alias) into a
	// module name, or "" when the kernel has it built in.
	resolveSoft := func(name string) (string, error) {
		if _, ok := idx[Canonical(name)]; ok {
			return Canonical(name), nil
		}
		if builtin[Canonical(name)] {
			return "", nil
		}
		if alias == nil {
			var err error
			if alias, err = aliases(root, idx); err != nil {
				return "", err
			}
		}
		m, ok := alias[name]
		if !ok {
			return "", fmt.Errorf("soft dependency %s matches no module", name)
		}
		if builtin[m] {
			return "", nil
		}
		return m, nil
	}
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
		deps, pre, err := Depends(filepath.Join(root, path))
		if err != nil {
			return err
		}
		info, err := modinfo(filepath.Join(root, path))
		if err != nil {
			return err
		}
		for _, p := range pre {
			m, err := resolveSoft(p)
			if err != nil {
				return fmt.Errorf("module %s: %w", name, err)
			}
			if m != "" {
				deps = append(deps, m)
			}
		}
		sort.Strings(deps)
		deps = slices.Compact(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: path, Deps: deps, Devices: DeviceAliases(info["alias"])})
		return nil
	}
	wanted := map[string]bool{}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
		wanted[Canonical(w)] = true
	}
	for i := range out {
		out[i].Wanted = wanted[out[i].Name]
	}
	return out, nil
}

// DeviceAliases keeps the aliases that match hardware (bus:pattern), not
// the ones the kernel requests by name (fs-*, crypto-*, devname:...).
func DeviceAliases(aliases []string) []string {
	var out []string
	for _, a := range aliases {
		bus, _, ok := strings.Cut(a, ":")
		if !ok || bus == "devname" || strings.ContainsAny(bus, "-_") {
			continue
		}
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}
