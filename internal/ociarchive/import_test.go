package ociarchive

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	imagearchive "github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	"github.com/google/go-cmp/cmp"
)

// containerd imports the archive as the agent does (ImportIndex, then a
// walk of the named image for this platform) and finds its entrypoint.
func TestContainerdImportsTheArchive(t *testing.T) {
	ctx := context.Background()
	var a bytes.Buffer
	if err := Write(&a, Image{Name: "rigos.test/x:1", Files: map[string]File{"bin": {Mode: 0o755, Data: []byte("#!")}},
		Entrypoint: []string{"/bin", "run"}, Env: []string{"A=1"}}); err != nil {
		t.Fatal(err)
	}
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	index, err := imagearchive.ImportIndex(ctx, cs, bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatalf("ImportIndex() = %v", err)
	}
	children, err := images.Children(ctx, cs, index)
	if err != nil {
		t.Fatal(err)
	}
	if len(children) != 1 || children[0].Annotations[images.AnnotationImageName] != "rigos.test/x:1" {
		t.Fatalf("index children = %+v, want one named rigos.test/x:1", children)
	}
	want, err := ManifestDigest(a.Bytes())
	if err != nil || children[0].Digest.String() != want {
		t.Errorf("imported manifest %s, ManifestDigest() = %s, %v", children[0].Digest, want, err)
	}
	if err := images.WalkNotEmpty(ctx, images.FilterPlatforms(images.ChildrenHandler(cs), platforms.Default()), children[0]); err != nil {
		t.Fatalf("walking the image: %v", err)
	}
	img := images.Image{Name: "x", Target: children[0]}
	cd, err := img.Config(ctx, cs, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct {
			Entrypoint, Env []string
		} `json:"config"`
	}
	b, err := content.ReadBlob(ctx, cs, cd)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/bin", "run"}, cfg.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	layers, err := img.RootFS(ctx, cs, platforms.Default())
	if err != nil || len(layers) != 1 {
		t.Errorf("RootFS() = %v, %v; want one layer", layers, err)
	}
}
