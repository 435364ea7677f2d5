package projectcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/rigos/rigos"

// binaries are the programs docs/architecture.md maps, in column order:
// the four production binaries and the development build of the agent.
var binaries = []struct{ name, pkg, tags string }{
	{"agent", "./agent", ""},
	{"attest", "./attest", ""},
	{"init", "./init", ""},
	{"imager", "./imager", ""},
	{"agent -tags sim", "./agent", "sim"},
}

const (
	beginLinks = "<!-- BEGIN GENERATED: which binary links which package. Do not edit: RIGOS_UPDATE_DOCS=1 go test ./internal/projectcheck -run TestArchitectureDoc -->"
	endLinks   = "<!-- END GENERATED -->"
)

// linksTable renders, for every package of the module, which binaries
// link it and the first sentence of its doc comment.
func linksTable(t *testing.T) string {
	t.Helper()
	r := root(t)
	cmd := exec.Command("go", "list", "-json=ImportPath,Doc,Name", "./...")
	cmd.Dir = r
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct{ ImportPath, Doc, Name string }
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].ImportPath < pkgs[j].ImportPath })
	linked := make([]map[string]bool, len(binaries))
	for i, b := range binaries {
		linked[i] = map[string]bool{}
		for _, d := range deps(t, b.tags, b.pkg) {
			linked[i][d] = true
		}
	}
	var sb strings.Builder
	sb.WriteString("| package | ")
	for _, b := range binaries {
		sb.WriteString("`" + b.name + "` | ")
	}
	sb.WriteString("what it is |\n|---|")
	for range binaries {
		sb.WriteString(":-:|")
	}
	sb.WriteString("---|\n")
	for _, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if rel == "" {
			rel = "."
		}
		fmt.Fprintf(&sb, "| `%s` | ", rel)
		for i := range binaries {
			if linked[i][p.ImportPath] {
				sb.WriteString("● | ")
			} else {
				sb.WriteString("  | ")
			}
		}
		sb.WriteString(firstSentence(p.Doc) + " |\n")
	}
	return sb.String()
}

func firstSentence(doc string) string {
	doc = strings.Join(strings.Fields(doc), " ")
	if i := strings.Index(doc, ". "); i >= 0 {
		doc = doc[:i+1]
	}
	return strings.ReplaceAll(doc, "|", "\\|")
}

// docs/architecture.md's map of binaries and packages is generated from
// the code, so it cannot drift: a package added, moved or linked
// differently fails this test until the doc is regenerated.
func TestArchitectureDoc(t *testing.T) {
	path := filepath.Join(root(t), "docs", "architecture.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, beginLinks), strings.Index(doc, endLinks)
	if i < 0 || j < i {
		t.Fatalf("%s: the generated section's markers are missing", path)
	}
	want := doc[:i] + beginLinks + "\n" + linksTable(t) + doc[j:]
	if want == doc {
		return
	}
	if os.Getenv("RIGOS_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with the code: run RIGOS_UPDATE_DOCS=1 go test ./internal/projectcheck -run TestArchitectureDoc and commit it", path)
}

// Every direct dependency in go.mod is named in docs/architecture.md
// with why it was chosen, and the doc names no module go.mod lacks.
func TestDirectDependenciesExplained(t *testing.T) {
	r := root(t)
	mod, err := os.ReadFile(filepath.Join(r, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	direct := map[string]bool{}
	all := map[string]bool{}
	in := false
	s := bufio.NewScanner(bytes.NewReader(mod))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		switch {
		case strings.HasPrefix(line, "require ("):
			in = true
		case line == ")":
			in = false
		case in && line != "":
			f := strings.Fields(line)
			all[f[0]] = true
			if !strings.Contains(line, "// indirect") {
				direct[f[0]] = true
			}
		}
	}
	doc, err := os.ReadFile(filepath.Join(r, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	sec := string(doc)
	if i := strings.Index(sec, "## Direct dependencies"); i >= 0 {
		sec = sec[i:]
	} else {
		t.Fatal("docs/architecture.md has no \"## Direct dependencies\" section")
	}
	if i := strings.Index(sec[3:], "\n## "); i >= 0 {
		sec = sec[:i+3]
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^- `([^`]+)`").FindAllStringSubmatch(sec, -1) {
		named[m[1]] = true
	}
	for m := range direct {
		if !named[m] {
			t.Errorf("go.mod requires %s directly; docs/architecture.md does not say why", m)
		}
	}
	for m := range named {
		if !all[m] {
			t.Errorf("docs/architecture.md explains %s, which go.mod does not require", m)
		}
	}
}
