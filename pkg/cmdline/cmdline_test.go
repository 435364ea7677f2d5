package cmdline

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	got, err := Parse(`quiet lockdown=confidentiality rigos.system=ab:cd:3 x="a b" panic=5 panic=10` + "\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"quiet": "", "lockdown": "confidentiality", "rigos.system": "ab:cd:3", "x": "a b", "panic": "10"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() diff (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`a="b`, `" "=x`, strings.Repeat("x", MaxLen+1)} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%.20q) succeeded", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`quiet a=b c="d e"`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err == nil {
			for k := range m {
				if strings.ContainsAny(k, " \t\n") {
					t.Fatalf("key %q contains a space", k)
				}
			}
		}
	})
}
