package pid1

import (
	"os"
	"strings"
)

// applySysctls applies Sysctls, saying which fail.
func applySysctls() {
	for _, s := range Sysctls {
		p := "/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")
		if err := os.WriteFile(p, []byte(s.Value), 0); err != nil {
			say("sysctl %s=%s: %v", s.Key, s.Value, err)
		}
	}
}
