package config

import (
	"os"
	"strings"
	"testing"

	pconfig "github.com/rigos/rigos/pkg/config"
)

func TestGoldenConfig(t *testing.T) {
	c, err := Load("testdata/v1.json")
	if err != nil {
		t.Fatalf("Load(v1) = %v", err)
	}
	if c.ServerName != "127.0.0.1" || c.TPM != "simulator" || c.ReconnectMax.D().String() != "1m0s" {
		t.Errorf("Load(v1) = %+v", c)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := &Config{TPM: "usb", LogLevel: "loud"}
	c.Defaults()
	err := c.Validate()
	for _, want := range []string{"verifier", "ca_cert", "tpm \"usb\"", "log_level"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func FuzzLoad(f *testing.F) {
	b, _ := os.ReadFile("testdata/v1.json")
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if pconfig.Decode(b, &c) == nil {
			c.Defaults()
			_ = c.Validate()
		}
	})
}
