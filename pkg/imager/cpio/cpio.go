// Package cpio writes and reads the "newc" cpio archives Linux unpacks as
// an initramfs. Archives are reproducible: entries are sorted, parents
// are created explicitly with fixed modes, and every timestamp, owner and
// inode number is fixed.
package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// File types for Entry.Mode.
const (
	TypeDir  = 0o040000
	TypeReg  = 0o100000
	TypeChar = 0o020000
	typeMask = 0o170000
)

// Entry is one archive member. Name is relative ("usr/bin/agent").
type Entry struct {
	Name      string
	Mode      uint32 // type and permission bits
	Data      []byte
	RdevMajor uint32
	RdevMinor uint32
}

const trailer = "TRAILER!!!"

// Write writes entries (plus any missing parent directories, mode 0755)
// sorted by name, and the trailer.
func Write(w io.Writer, entries []Entry) error {
	byName := map[string]Entry{}
	for _, e := range entries {
		name := path.Clean(strings.TrimPrefix(e.Name, "/"))
		if name == "." || strings.HasPrefix(name, "..") {
			return fmt.Errorf("cpio: bad entry name %q", e.Name)
		}
		if _, dup := byName[name]; dup {
			return fmt.Errorf("cpio: %s added twice", name)
		}
		e.Name = name
		byName[name] = e
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = Entry{Name: d, Mode: TypeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if err := writeEntry(w, uint32(i+1), byName[n]); err != nil {
			return err
		}
	}
	return writeEntry(w, 0, Entry{Name: trailer})
}

func writeEntry(w io.Writer, ino uint32, e Entry) error {
	nlink := uint32(1)
	if e.Mode&typeMask == TypeDir {
		nlink = 2
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.RdevMajor, e.RdevMinor, len(e.Name)+1, 0)
	b.WriteString(e.Name)
	b.WriteByte(0)
	pad(&b)
	b.Write(e.Data)
	pad(&b)
	_, err := w.Write(b.Bytes())
	return err
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// MaxEntry bounds one member's size when reading.
const MaxEntry = 1 << 30

// Read parses a newc archive up to its trailer.
func Read(r io.Reader) ([]Entry, error) {
	var out []Entry
	var off int64
	for {
		hdr := make([]byte, 110)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return nil, fmt.Errorf("cpio: reading header at %d: %w", off, err)
		}
		if string(hdr[:6]) != "070701" {
			return nil, fmt.Errorf("cpio: bad magic %q at %d", hdr[:6], off)
		}
		var f [13]uint64
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("cpio: bad header field %d at %d", i, off)
			}
			f[i] = v
		}
		mode, size, rmaj, rmin, namesize := f[1], f[6], f[9], f[10], f[11]
		if namesize == 0 || namesize > 4096 || size > MaxEntry {
			return nil, fmt.Errorf("cpio: implausible sizes at %d", off)
		}
		nlen := (110 + namesize + 3) &^ 3
		name := make([]byte, nlen-110)
		if _, err := io.ReadFull(r, name); err != nil {
			return nil, fmt.Errorf("cpio: reading name at %d: %w", off, err)
		}
		if name[namesize-1] != 0 {
			return nil, fmt.Errorf("cpio: name not NUL-terminated at %d", off)
		}
		n := string(name[:namesize-1])
		if n == trailer {
			return out, nil
		}
		// Read what is there rather than trusting the header's size with
		// one allocation: a short archive must not cost its claimed size.
		padded := int64((size + 3) &^ 3)
		data, err := io.ReadAll(io.LimitReader(r, padded))
		if err != nil || int64(len(data)) != padded {
			return nil, fmt.Errorf("cpio: reading %s: truncated archive", n)
		}
		out = append(out, Entry{Name: n, Mode: uint32(mode), Data: data[:size], RdevMajor: uint32(rmaj), RdevMinor: uint32(rmin)})
		off += int64(nlen) + padded
	}
}

// ErrNotFound is returned by Find.
var ErrNotFound = errors.New("cpio: no such entry")

// Find returns the entry called name.
func Find(entries []Entry, name string) (Entry, error) {
	for _, e := range entries {
		if e.Name == name {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, name)
}
