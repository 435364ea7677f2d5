package bootconfig

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`{"network": {"mode": "static", "address": "10.0.2.15/24", "gateway": "10.0.2.2"}}`))
	if err != nil || c.Agent[0] != "/system/usr/bin/agent" {
		t.Fatalf("Parse() = %+v, %v", c, err)
	}
	_, err = Parse([]byte(`{"network": {"mode": "static", "address": "10.0.2.15", "gateway": "x", "dns": ["y"]}, "agent": ["agent"]}`))
	for _, want := range []string{"network.address", "network.gateway", "network.dns", "agent"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(bad) = %v, want it to mention %s", err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"network": {"mode": "dhcp"}}`))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = Parse(b) })
}
