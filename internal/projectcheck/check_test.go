package projectcheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func root(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Skipf("go command unavailable: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// Every package has a doc comment.
func TestPackagesDocumented(t *testing.T) {
	r := root(t)
	dirs := map[string]bool{}
	_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			dirs[filepath.Dir(p)] = true
		}
		return nil
	})
	for dir := range dirs {
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi fs.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		for name, pkg := range pkgs {
			documented := false
			for _, f := range pkg.Files {
				documented = documented || f.Doc != nil
			}
			if !documented {
				rel, _ := filepath.Rel(r, dir)
				t.Errorf("package %s (%s) has no doc comment", name, rel)
			}
		}
	}
}

// The verifier is pure: it must not link the TPM device code, the agent's
// evidence collection or the simulator.
func TestVerifierDoesNotLinkTPMCode(t *testing.T) {
	r := root(t)
	cmd := exec.Command("go", "list", "-deps", "./attest")
	cmd.Dir = r
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, banned := range []string{
		"github.com/rigos/rigos/pkg/tpm", "github.com/rigos/rigos/pkg/attestation/collect",
		"github.com/rigos/rigos/internal/sim/simnode", "github.com/google/go-tpm-tools/simulator",
	} {
		for _, dep := range strings.Fields(string(out)) {
			if dep == banned {
				t.Errorf("attest links %s", banned)
			}
		}
	}
}

// deps lists the packages the named main packages link, built with
// cgo as the release builds are.
func deps(t *testing.T, tags string, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-tags", tags}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Fields(string(out))
}

// The simulation packages (a simulated measured boot, the TPM simulator,
// software TPMs) are development tools: no production binary links them.
// Only a development build (-tags sim) of the agent and attest does.
func TestProductionLinksNoSimulation(t *testing.T) {
	const sim = "github.com/rigos/rigos/internal/sim/"
	for _, bin := range []string{"./agent", "./attest", "./init", "./imager"} {
		for _, dep := range deps(t, "", bin) {
			if strings.HasPrefix(dep, sim) || dep == "github.com/google/go-tpm-tools/simulator" {
				t.Errorf("%s links %s", bin, dep)
			}
		}
	}
	// The development build still has the simulator: the check above
	// would pass vacuously if the tag's files were gone.
	found := false
	for _, dep := range deps(t, "sim", "./agent") {
		found = found || dep == sim+"simnode"
	}
	if !found {
		t.Errorf("agent built with -tags sim does not link %ssimnode", sim)
	}
}

// Test images are built with go-containerregistry (internal/ociarchive);
// no production binary links it. The agent imports images with
// containerd's own code.
func TestProductionLinksNoImageBuilder(t *testing.T) {
	for _, bin := range []string{"./agent", "./attest", "./init", "./imager"} {
		for _, dep := range deps(t, "", bin) {
			if strings.HasPrefix(dep, "github.com/google/go-containerregistry/") || dep == "github.com/rigos/rigos/internal/ociarchive" {
				t.Errorf("%s links %s", bin, dep)
			}
		}
	}
}

// The init binary (PID 1) stays small and simple: no cgo and none of the
// heavy packages the agent and verifier use.
func TestInitStaysSmall(t *testing.T) {
	r := root(t)
	cmd := exec.Command("go", "list", "-deps", "./init")
	cmd.Dir = r
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, heavy := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "modernc.org/sqlite",
			"github.com/google/go-attestation", "github.com/containerd/", "github.com/NVIDIA/", "runtime/cgo"} {
			if strings.HasPrefix(dep, heavy) {
				t.Errorf("init links %s", dep)
			}
		}
	}
}

// Every test docs/threat-model.md names as a defence's proof exists (a
// renamed or deleted test must take its line with it), and every table
// row names one.
func TestThreatModelNamesRealTests(t *testing.T) {
	r := root(t)
	doc, err := os.ReadFile(filepath.Join(r, "docs", "threat-model.md"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil {
				defined[fn.Name.Name] = true
			}
		}
		return nil
	})
	name := regexp.MustCompile(`\b(Test|Fuzz)[A-Z][A-Za-z0-9]*`)
	inTable := false // a table whose last column is "Test"
	for i, line := range strings.Split(string(doc), "\n") {
		for _, n := range name.FindAllString(line, -1) {
			if !defined[n] {
				t.Errorf("docs/threat-model.md:%d names %s, which no test defines", i+1, n)
			}
		}
		switch cells := strings.Split(line, "|"); {
		case strings.HasSuffix(line, "| Test |"):
			inTable = true
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case inTable && !strings.HasPrefix(line, "|---") && !name.MatchString(cells[len(cells)-2]):
			t.Errorf("docs/threat-model.md:%d: a defence without a test: %s", i+1, strings.TrimSpace(cells[1]))
		}
	}
}

// The image layout (pkg/layout) is constants that init, the agent and the
// imager share: it links only the standard library, so init may import it
// without growing.
func TestLayoutLinksOnlyStdlib(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./pkg/layout")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/rigos/rigos/pkg/layout" {
			t.Errorf("pkg/layout links %s", dep)
		}
	}
}
