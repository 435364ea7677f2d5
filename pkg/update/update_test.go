package update

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/imager/uki"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/update/updatetest"
)

func fakeUKI(_ testing.TB, cmdline string, padding int) []byte {
	return updatetest.FakeUKI(cmdline, padding)
}

type bundle struct {
	system, uki []byte
}

func (u bundle) spec() Spec {
	s, k := sha256.Sum256(u.system), sha256.Sum256(u.uki)
	return Spec{SystemSize: int64(len(u.system)), SystemSHA256: s[:], UKISize: int64(len(u.uki)), UKISHA256: k[:]}
}

func newBundle(t testing.TB, slot layout.Slot) bundle {
	sys := make([]byte, 3<<20+123)
	rand.Read(sys)
	return bundle{system: sys, uki: fakeUKI(t, "quiet rigos.system=ab:cd:3 "+layout.SlotParam+"="+string(slot), 70_000)}
}

// target makes a slot partition (as a file) of size bytes, filled with
// an older build, and an ESP folder with the slot's old UKI.
func target(t *testing.T, slot layout.Slot, size int) Options {
	dir := t.TempDir()
	part := filepath.Join(dir, "system-"+string(slot))
	if err := os.WriteFile(part, bytes.Repeat([]byte{0xee}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	esp := filepath.Join(dir, "esp")
	for _, s := range layout.Slots() {
		p := filepath.Join(esp, layout.SlotUKI(s))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("old UKI of slot "+string(s)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Options{Slot: slot, SystemPartition: part, ESP: esp}
}

// send writes the bundle in chunks of n bytes; it returns the first
// error and whether the update completed.
func send(w *Writer, u bundle, n int) (bool, error) {
	for _, p := range []struct {
		part Part
		data []byte
	}{{System, u.system}, {UKI, u.uki}} {
		for off := 0; off < len(p.data); off += n {
			done, err := w.Write(p.part, int64(off), p.data[off:min(off+n, len(p.data))])
			if err != nil || done {
				return done, err
			}
		}
	}
	return false, nil
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An update writes the slot's partition and UKI, and nothing else.
func TestUpdateWritesSlot(t *testing.T) {
	u := newBundle(t, layout.SlotB)
	o := target(t, layout.SlotB, 8<<20)
	o.Spec = u.spec()
	w, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := os.Stat(filepath.Join(o.ESP, layout.SlotUKI(layout.SlotB))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slot B's old UKI is still there while its partition is rewritten (%v)", err)
	}
	if done, err := send(w, u, 1<<20); err != nil || !done {
		t.Fatalf("sending the update: done %v, %v", done, err)
	}
	res, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(u.system)+len(u.uki)) {
		t.Errorf("Result.Bytes = %d, want %d", res.Bytes, len(u.system)+len(u.uki))
	}
	part := readFile(t, o.SystemPartition)
	if !bytes.Equal(part[:len(u.system)], u.system) || len(part) != 8<<20 {
		t.Error("slot B's partition does not hold the system image")
	}
	if !bytes.Equal(readFile(t, filepath.Join(o.ESP, layout.SlotUKI(layout.SlotB))), u.uki) {
		t.Error("slot B's UKI is not the update's")
	}
	if got := string(readFile(t, filepath.Join(o.ESP, layout.SlotUKI(layout.SlotA)))); got != "old UKI of slot a" {
		t.Errorf("slot A's UKI changed: %q", got)
	}
	if ents, _ := os.ReadDir(filepath.Dir(filepath.Join(o.ESP, layout.SlotUKI(layout.SlotB)))); len(ents) != 2 {
		t.Errorf("the ESP folder holds %d files, want the two UKIs", len(ents))
	}
}

// Bad input is refused with a clear error, and nothing is made bootable:
// the slot's UKI stays absent.
func TestUpdateRefusesBadInput(t *testing.T) {
	good := newBundle(t, layout.SlotB)
	corrupt := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 1; return c }
	for name, tc := range map[string]struct {
		spec  func(Spec) Spec
		send  bundle
		own   bool // the spec is the sent bundle's (not good's)
		slot  layout.Slot
		size  int
		start string // error from Start
		write string // error from Write
		fin   string // error from Finish
	}{
		"no digests":              {spec: func(s Spec) Spec { s.UKISHA256 = nil; return s }, start: "without the sizes"},
		"system larger than slot": {size: 1 << 20, start: "does not fit slot b"},
		"UKI too large":           {spec: func(s Spec) Spec { s.UKISize = MaxUKI + 1; return s }, start: "larger than"},
		"unknown slot":            {slot: "c", start: "unknown slot"},
		"corrupted system":        {send: bundle{corrupt(good.system), good.uki}, write: "system image's SHA-256"},
		"corrupted UKI":           {send: bundle{good.system, corrupt(good.uki)}, write: "UKI's SHA-256"},
		"UKI for the other slot":  {send: newBundleWithSystem(t, layout.SlotA, good.system), own: true, fin: "boots slot a, but the update writes slot b"},
		"not a UKI":               {send: bundle{good.system, make([]byte, 4096)}, own: true, fin: "the UKI"},
		"short system":            {spec: func(s Spec) Spec { s.SystemSize++; return s }, write: "want system image at offset"},
	} {
		t.Run(name, func(t *testing.T) {
			slot, size := tc.slot, tc.size
			if slot == "" {
				slot = layout.SlotB
			}
			if size == 0 {
				size = 8 << 20
			}
			o := target(t, layout.SlotB, size)
			o.Slot = slot
			sent := tc.send
			if sent.system == nil {
				sent = good
			}
			o.Spec = good.spec()
			if tc.own {
				o.Spec = sent.spec()
			}
			if tc.spec != nil {
				o.Spec = tc.spec(good.spec())
			}
			w, err := Start(o)
			if tc.start != "" {
				if err == nil || !strings.Contains(err.Error(), tc.start) {
					t.Fatalf("Start() = %v, want an error with %q", err, tc.start)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = send(w, sent, 1<<20)
			if tc.write != "" {
				if err == nil || !strings.Contains(err.Error(), tc.write) {
					t.Fatalf("Write() = %v, want an error with %q", err, tc.write)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if _, err := w.Finish(); err == nil || !strings.Contains(err.Error(), tc.fin) {
				t.Fatalf("Finish() = %v, want an error with %q", err, tc.fin)
			}
			if err := w.Close(); err != nil {
				t.Error(err)
			}
			if _, err := os.Stat(filepath.Join(o.ESP, layout.SlotUKI(layout.SlotB))); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slot b has a UKI after a failed update (%v)", err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(filepath.Join(o.ESP, layout.SlotUKI(layout.SlotB)))); len(ents) != 1 {
				t.Errorf("the ESP folder holds %d files after a failed update, want slot A's UKI only", len(ents))
			}
		})
	}
}

func newBundleWithSystem(t testing.TB, slot layout.Slot, sys []byte) bundle {
	u := newBundle(t, slot)
	u.system = sys
	return u
}

// Parts out of order, with gaps or overlaps, or past their end are
// refused.
func TestUpdateRefusesDisorder(t *testing.T) {
	u := newBundle(t, layout.SlotB)
	o := target(t, layout.SlotB, 8<<20)
	o.Spec = u.spec()
	w, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for name, tc := range map[string]struct {
		part Part
		off  int64
		data []byte
		want string
	}{
		"UKI first":    {UKI, 0, u.uki[:10], "want system image at offset 0"},
		"gap":          {System, 10, u.system[10:20], "want system image at offset 0"},
		"past its end": {System, 0, append(bytes.Clone(u.system), 0), "longer than"},
		"unknown part": {Part(9), 0, nil, "got part 9"},
	} {
		if _, err := w.Write(tc.part, tc.off, tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Write() = %v, want an error with %q", name, err, tc.want)
		}
	}
	if _, err := w.Write(System, 0, u.system[:100]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(System, 50, u.system[50:100]); err == nil {
		t.Error("an overlapping chunk was accepted")
	}
	if p, off := w.Expecting(); p != System || off != 100 {
		t.Errorf("Expecting() = %s, %d after refusals, want system image, 100", p, off)
	}
}

func TestUKISlot(t *testing.T) {
	for _, slot := range layout.Slots() {
		uki := fakeUKI(t, "a=b "+layout.SlotParam+"="+string(slot)+" c", 0)
		if got, err := UKISlot(bytes.NewReader(uki)); err != nil || got != slot {
			t.Errorf("UKISlot() = %q, %v, want %q", got, err, slot)
		}
	}
	if _, err := UKISlot(bytes.NewReader(fakeUKI(t, "quiet", 0))); err == nil {
		t.Error("a UKI naming no slot was accepted")
	}
}

func FuzzUKISlot(f *testing.F) {
	f.Add(fakeUKI(f, layout.SlotParam+"=b", 0))
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := UKISlot(bytes.NewReader(b)); err == nil {
			if _, err := layout.ParseSlot(string(s)); err != nil {
				t.Fatalf("UKISlot returned %q without an error", s)
			}
		}
	})
}

// The PCR 11 a UKI leaves is predicted from its sections as the imager
// predicts it from what it put in them.
func TestPredictPCR11(t *testing.T) {
	c := "quiet " + layout.SlotParam + "=b"
	got, err := PredictPCR11(bytes.NewReader(fakeUKI(t, c, 100)))
	want := uki.PredictPCR11([]uki.Section{{Name: ".cmdline", Data: append([]byte(c), 0)}})
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("PredictPCR11 = %x, %v; want %x", got, err, want)
	}
	if _, err := PredictPCR11(bytes.NewReader([]byte("MZ"))); err == nil {
		t.Error("predicted PCR 11 of a non-PE")
	}
}

// BenchmarkUpdate writes a 64 MiB system image and a UKI in 1 MiB parts,
// as the verifier streams them, and reads the slot back.
func BenchmarkUpdate(b *testing.B) {
	sys := make([]byte, 64<<20)
	rand.Read(sys)
	u := bundle{system: sys, uki: fakeUKI(b, layout.SlotParam+"=b", 1<<20)}
	b.SetBytes(int64(len(u.system) + len(u.uki)))
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		part := filepath.Join(dir, "slot")
		if err := os.WriteFile(part, make([]byte, 80<<20), 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		w, err := Start(Options{Slot: layout.SlotB, SystemPartition: part, ESP: filepath.Join(dir, "esp"), Spec: u.spec()})
		if err != nil {
			b.Fatal(err)
		}
		if done, err := send(w, u, 1<<20); err != nil || !done {
			b.Fatal(done, err)
		}
		if _, err := w.Finish(); err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}
