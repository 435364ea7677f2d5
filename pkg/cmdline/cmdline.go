// Package cmdline parses the kernel command line (/proc/cmdline):
// space-separated key=value or key words, with double quotes around
// values that contain spaces. Later settings override earlier ones, as
// in the kernel.
package cmdline

import (
	"fmt"
	"strings"
)

// MaxLen bounds the command line (COMMAND_LINE_SIZE is 2048 on x86).
const MaxLen = 4096

// Parse returns the settings; a bare word maps to "".
func Parse(s string) (map[string]string, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("command line of %d bytes exceeds %d", len(s), MaxLen)
	}
	out := map[string]string{}
	s = strings.TrimSpace(s)
	for len(s) > 0 {
		var word strings.Builder
		quoted := false
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if c == '"' {
				quoted = !quoted
				continue
			}
			if !quoted && (c == ' ' || c == '\t' || c == '\n') {
				break
			}
			word.WriteByte(c)
		}
		if quoted {
			return nil, fmt.Errorf("unterminated quote in the command line")
		}
		k, v, _ := strings.Cut(word.String(), "=")
		if strings.ContainsAny(k, " \t\n") {
			return nil, fmt.Errorf("command-line key %q contains whitespace", k)
		}
		if k != "" {
			out[k] = v
		}
		s = strings.TrimLeft(s[i:], " \t\n")
	}
	return out, nil
}
