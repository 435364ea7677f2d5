package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pconfig "github.com/rigos/rigos/pkg/config"
)

// Golden configs from earlier releases must keep loading.
func TestGoldenConfigs(t *testing.T) {
	c, err := Load("testdata/v1.json")
	if err != nil {
		t.Fatalf("Load(v1) = %v", err)
	}
	if c.SpotCheck.Mean.D() != 3*time.Second || c.HandshakeTimeout.D() != 30*time.Second || !c.AllowDev {
		t.Errorf("Load(v1) = %+v", c)
	}
	if !c.UseBuiltinEKRoots() {
		t.Error("Load(v1).UseBuiltinEKRoots() = false, want the built-in EK roots by default")
	}
	if c.TLSCert != filepath.Join("testdata", "server.crt") {
		t.Errorf("TLSCert = %q, want it relative to the config", c.TLSCert)
	}
}

func TestEKRootsBuiltinOff(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(`"allow_dev": true,`), []byte(`"allow_dev": true, "ek_roots_builtin": false, "ek_roots": ["vendor.pem"],`), 1)
	if err := os.WriteFile(filepath.Join(dir, "c.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(filepath.Join(dir, "c.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.UseBuiltinEKRoots() || len(c.EKRoots) != 1 || c.EKRoots[0] != filepath.Join(dir, "vendor.pem") {
		t.Errorf("Load(ek_roots_builtin false) = builtin %v, roots %v; want false, [vendor.pem]", c.UseBuiltinEKRoots(), c.EKRoots)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := &Config{PCRs: []int{30}, LogLevel: "loud", UpdateURL: "http://updates.example.com/builds"}
	c.Defaults()
	c.SpotCheck.Min = pconfig.Duration(time.Hour)
	err := c.Validate()
	for _, want := range []string{"tls_cert", "tls_key", "signing_key", "manifest_dir", "manifest_keys", "pcrs: 30", "min 1h0m0s exceeds", "log_level",
		"update_url \"http://updates.example.com/builds\": want https://", "update_url needs update_dir"} {
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
		if pconfig.Decode(b, &c) != nil {
			return
		}
		c.Defaults()
		_ = c.Validate()
	})
}
