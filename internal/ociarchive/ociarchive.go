// Package ociarchive writes OCI image archives (an OCI image layout in a
// tar, as containerd imports it) from a set of files: one layer, one
// manifest, one config, built with go-containerregistry. Tests and the
// demo use it to build small workload images without a registry or a
// container engine. The output is deterministic. Nothing the agent or the
// verifier links imports it (a project check keeps it that way).
package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one file of the image's only layer.
type File struct {
	Mode int64
	Data []byte
}

// Image describes the image to write.
type Image struct {
	// Name is the image reference recorded in the archive
	// (io.containerd.image.name), e.g. "rigos.test/hello:1".
	Name       string
	Files      map[string]File // path inside the image -> file
	Entrypoint []string
	Env        []string
}

// nameAnnotation names an image in an OCI layout for containerd's import.
const nameAnnotation = "io.containerd.image.name"

var epoch = time.Unix(0, 0).UTC()

// Write writes the archive for img to w.
func Write(w io.Writer, img Image) error {
	if img.Name == "" || len(img.Entrypoint) == 0 {
		return fmt.Errorf("image needs a name and an entrypoint")
	}
	layerTar, err := layerTar(img.Files)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	env := img.Env
	if len(env) == 0 {
		env = []string{"PATH=/"}
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Config: v1.Config{Entrypoint: img.Entrypoint, Env: env, WorkingDir: "/"},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	image, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	index := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{
		Add:        image,
		Descriptor: v1.Descriptor{Annotations: map[string]string{nameAnnotation: img.Name}},
	})
	dir, err := os.MkdirTemp("", "rigos-ociarchive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := layout.Write(dir, index); err != nil {
		return fmt.Errorf("image layout: %w", err)
	}
	return tarLayout(w, dir)
}

// layerTar is the layer's tar: files in name order, no timestamps.
func layerTar(files map[string]File) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := files[p]
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	err := tw.Close()
	return b.Bytes(), err
}

// tarLayout writes the image layout in dir as a tar: oci-layout and
// index.json first, then the blobs by digest; regular files only, no
// timestamps or owners.
func tarLayout(w io.Writer, dir string) error {
	names := []string{"oci-layout", "index.json"}
	blobs, err := fs.Glob(os.DirFS(dir), "blobs/*/*")
	if err != nil {
		return err
	}
	sort.Strings(blobs)
	out := tar.NewWriter(w)
	for _, name := range append(names, blobs...) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := out.Write(b); err != nil {
			return err
		}
	}
	return out.Close()
}

// ManifestDigest returns the digest of the image manifest in an archive
// written by Write (what containerd reports as the image digest).
func ManifestDigest(archive []byte) (string, error) {
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("no index.json in the archive: %w", err)
		}
		if h.Name != "index.json" {
			continue
		}
		idx, err := v1.ParseIndexManifest(tr)
		if err != nil {
			return "", fmt.Errorf("index.json: %w", err)
		}
		if len(idx.Manifests) != 1 {
			return "", fmt.Errorf("index lists %d manifests", len(idx.Manifests))
		}
		return idx.Manifests[0].Digest.String(), nil
	}
}
