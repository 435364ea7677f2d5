package measure

import (
	"bytes"
	"os"
	"testing"
)

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func FuzzParse(f *testing.F) {
	f.Add(sample())
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := Parse(b)
		if err != nil {
			return
		}
		// Anything accepted re-encodes to the same bytes.
		var out []byte
		for _, e := range events {
			out = append(out, e.Encode()...)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", out, b)
		}
	})
}
