package imager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Missing inputs and a malformed ASK plan are all named before anything
// is built.
func TestBuildNamesEveryProblem(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(plan, []byte(`{"version": 1, "gpus": -2, "price": {"currency": "USD"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(Options{Plan: plan, VerifierCA: filepath.Join(dir, "absent.crt")})
	if err == nil {
		t.Fatal("Build succeeded without its inputs")
	}
	for _, want := range []string{"output folder is required", "keys folder is required", "kernel is required",
		"verifier address is required", "verifier CA", "ASK plan"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
