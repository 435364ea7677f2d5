package imager

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/cmdline"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/layout/agentconfig"
)

// The measured command line names the system partition's dm-verity tree
// and the UKI's slot, the way init reads them.
func TestCmdlineNamesSystemAndSlot(t *testing.T) {
	o := &Options{Console: "ttyS0", ExtraCmdline: []string{"quiet"}}
	for _, slot := range layout.Slots() {
		args, err := cmdline.Parse(o.cmdline("ab:cd:3", slot))
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{layout.SystemParam: "ab:cd:3", layout.SlotParam: string(slot), "console": "ttyS0", "quiet": ""} {
			if got, ok := args[k]; !ok || got != want {
				t.Errorf("cmdline(%s) sets %s = %q (%v), want %q", slot, k, got, ok, want)
			}
		}
		if got, err := layout.ParseSlot(args[layout.SlotParam]); err != nil || got != slot {
			t.Errorf("ParseSlot(%q) = %q, %v, want slot %s", args[layout.SlotParam], got, err, slot)
		}
	}
}

// Missing inputs and a malformed ASK plan are all named before anything
// is built.
func TestBuildNamesEveryProblem(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(plan, []byte(`{"version": 1, "gpus": -2, "price": {"currency": "USD"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(Options{Plan: plan, VerifierCA: filepath.Join(dir, "absent.crt"), CARoots: roots})
	if err == nil {
		t.Fatal("Build succeeded without its inputs")
	}
	for _, want := range []string{"output folder is required", "keys folder is required", "kernel is required",
		"verifier address is required", "verifier CA", "ASK plan", "want certificates only", "pinned inputs: no inputs folder"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// A CA bundle is certificates and nothing else.
func TestCheckCARoots(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct{ content, want string }{
		"empty":         {"", "want a PEM bundle"},
		"not PEM":       {"hello", "want a PEM bundle"},
		"bad cert":      {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1"},
		"trailing junk": {testCert + "junk", "something else"},
	} {
		if err := checkCARoots(write(name, tc.content)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: checkCARoots() = %v, want %q", name, err, tc.want)
		}
	}
	if err := checkCARoots(write("good", testCert+testCert)); err != nil {
		t.Errorf("checkCARoots(two certificates) = %v", err)
	}
}

// testCert is a self-signed test root (not a secret).
const testCert = `-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUSsr6t67juWbSRfgc7Pf3iyxDxMUwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJdGVzdC1yb290MB4XDTI2MTEyNzExMjU0NVoXDTM2MTEyNDEx
MjU0NVowFDESMBAGA1UEAwwJdGVzdC1yb290MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAESfviyYktTj80TV9LQKed9T2PEGl2MiC0ZocvhPXqJlnrQlTqXGjENHyh
mg61MCnuR6DRX70yQTLYJT+Ko2/IXqNTMFEwHQYDVR0OBBYEFM78ghtPtUrgSZNO
+2SKrxaHbL2lMB8GA1UdIwQYMBaAFM78ghtPtUrgSZNO+2SKrxaHbL2lMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgB/EXPvaOHLxnKosZ+IoWvB02
Npjr/G/Rj5wL+p0P3yoCIQCeTnL1mZrAF4wiO692d3aNw4JL8fESXD7kFxaUh6g6
6Q==
-----END CERTIFICATE-----
`

// The configurations baked into the initramfs keep their bytes: the
// agent's as the untyped map the imager once wrote, containerd's as its
// literal text.
func TestBakedConfigsUnchanged(t *testing.T) {
	for _, o := range []Options{
		{Verifier: "verifier.example:7443"},
		{Verifier: "10.0.2.2:7443", NodeID: "rig-<1>&2"},
	} {
		old, err := json.MarshalIndent(map[string]any{
			"node_id": o.NodeID, "verifier": o.Verifier, "ca_cert": "/etc/rigos/verifier-ca.crt", "tpm": "device",
			"state_dir": "/run/rigos/agent", "runtime_log": "/run/rigos/runtime.cel",
			"containerd": "/run/containerd/containerd.sock", "scratch_dir": "/var/lib/rigos/scratch",
			"install": true, // images let the platform install them onto a disk
		}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := agentconfig.Encode(o.agentConfig())
		if err != nil {
			t.Fatalf("Encode() = %v", err)
		}
		if want := string(append(old, '\n')); string(got) != want {
			t.Errorf("agent.json = %s, want %s", got, want)
		}
	}
	const oldContainerd = `version = 3
root = "/var/lib/rigos/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.native",
]

[grpc]
  address = "/run/containerd/containerd.sock"
  uid = 0
  gid = 0

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.cdi.v1.cdi"]
  spec_dirs = ["/run/cdi"]
`
	if ContainerdConfig != oldContainerd {
		t.Errorf("ContainerdConfig = %s, want %s", ContainerdConfig, oldContainerd)
	}
}

// An input that is not pinned stops the build: a stub without its
// digest, a stub or pinned file whose digest differs.
func TestBuildRefusesUnpinnedInputs(t *testing.T) {
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub.efi")
	if err := os.WriteFile(stub, []byte("MZ"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		o    Options
		want string
	}{
		"stub without digest": {Options{Stub: stub, Inputs: dir}, "given without its SHA-256"},
		"digest without stub": {Options{StubSHA256: strings.Repeat("0", 64), Inputs: dir}, "without the stub"},
		"stub digest differs": {Options{Stub: stub, StubSHA256: strings.Repeat("0", 64), Inputs: dir}, "want " + strings.Repeat("0", 64)},
		"inputs not pinned":   {Options{Inputs: dir}, "pinned input mkfs.erofs"},
	} {
		_, err := Build(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build() = %v, want an error naming %q", name, err, tc.want)
		}
	}
}

func TestToolchain(t *testing.T) {
	v, err := toolchain(filepath.Join("..", "..", "go.mod"))
	if err != nil || !strings.HasPrefix(v, "go1.") {
		t.Errorf("toolchain(go.mod) = %q, %v; want a pinned go1.x", v, err)
	}
	p := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(p, []byte("module x\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := toolchain(p); err == nil || !strings.Contains(err.Error(), "not pinned") {
		t.Errorf("toolchain(no toolchain line) = %v, want an error", err)
	}
}
