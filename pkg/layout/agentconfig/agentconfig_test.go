package agentconfig

import (
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/askplan"
	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/layout"
)

// What Encode writes loads back as the same configuration.
func TestEncodeRoundTrips(t *testing.T) {
	in := &Config{Verifier: "verifier.example:7443", CACert: layout.VerifierCA, TPM: "device",
		RuntimeLog: layout.RuntimeLog, Plan: askplan.Plan{GPUs: 2}, ReconnectMax: config.Duration(90e9)}
	b, err := Encode(in)
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	var out Config
	if err := config.Decode(b, &out); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	in.Defaults()
	out.Defaults()
	if err := out.Validate(); err != nil {
		t.Errorf("Validate(%s) = %v", b, err)
	}
	if out.Verifier != in.Verifier || out.Plan != in.Plan || out.ReconnectMax != in.ReconnectMax || out.RuntimeLog != in.RuntimeLog {
		t.Errorf("Encode() then decode = %+v, want %+v", out, *in)
	}
}

// Unset fields are left to the agent's defaults; node_id is always written.
func TestEncodeLeavesOutUnsetFields(t *testing.T) {
	b, err := Encode(&Config{Verifier: "v:1"})
	if err != nil {
		t.Fatalf("Encode() = %v", err)
	}
	if got, want := string(b), "{\n  \"node_id\": \"\",\n  \"verifier\": \"v:1\"\n}\n"; got != want {
		t.Errorf("Encode() = %q, want %q", got, want)
	}
	if strings.Contains(string(b), "plan") {
		t.Errorf("Encode() = %s, wrote the unset plan", b)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := &Config{TPM: "usb", GPUs: "some", LogLevel: "loud", Plan: askplan.Plan{CPUs: -1}}
	c.Defaults()
	err := c.Validate()
	for _, want := range []string{"verifier", "ca_cert", `tpm "usb"`, `gpus "some"`, "negative", "log_level"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
