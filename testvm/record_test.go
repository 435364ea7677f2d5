package testvm

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/imager"
)

// record copies the first evidence the verifier appraised from a real
// QEMU boot into pkg/attestation/testdata, for the pure verifier's tests
// (RIGOS_RECORD=1 make test-vm).
func record(t *testing.T, v *verifier, img *imager.Result) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var files []string
	for len(files) == 0 && time.Now().Before(deadline) {
		files, _ = filepath.Glob(filepath.Join(v.dir, "evidence", "*.json"))
		time.Sleep(100 * time.Millisecond) // the dump is written right after the verdict
	}
	if len(files) == 0 {
		t.Fatal("no evidence dump")
	}
	dst := filepath.Join(env.root, "pkg", "attestation", "testdata")
	for src, name := range map[string]string{files[0]: "qemu-evidence.json", img.Manifest: "qemu-manifest.json",
		filepath.Join(env.keys, "manifest.pub"): "qemu-manifest.pub"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("recorded %s into %s", files[0], dst)
}
