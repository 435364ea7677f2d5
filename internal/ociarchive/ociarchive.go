// Package ociarchive writes OCI image archives (an OCI image layout in a
// tar) from a set of files: one layer, one manifest, one config. Tests
// and the demo use it to build small workload images without a registry
// or a container engine. The output is deterministic.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"
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

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

var epoch = time.Unix(0, 0).UTC()

// Write writes the archive for img to w.
func Write(w io.Writer, img Image) error {
	if img.Name == "" || len(img.Entrypoint) == 0 {
		return fmt.Errorf("image needs a name and an entrypoint")
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	paths := make([]string, 0, len(img.Files))
	for p := range img.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := img.Files[p]
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if _, err := zw.Write(layer.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	blobs := map[string][]byte{}
	add := func(mediaType string, b []byte) descriptor {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	diffID := sha256.Sum256(layer.Bytes())
	env := img.Env
	if len(env) == 0 {
		env = []string{"PATH=/"}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": img.Entrypoint, "Env": env, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return err
	}
	cd := add("application/vnd.oci.image.config.v1+json", config)
	ld := add("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": cd, "layers": []descriptor{ld},
	})
	if err != nil {
		return err
	}
	md := add("application/vnd.oci.image.manifest.v1+json", manifest)
	md.Annotations = map[string]string{"io.containerd.image.name": img.Name}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []descriptor{md},
	})
	if err != nil {
		return err
	}

	out := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := out.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := put("blobs/sha256/"+d[len("sha256:"):], blobs[d]); err != nil {
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
		var idx struct {
			Manifests []descriptor `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", err
		}
		if len(idx.Manifests) != 1 {
			return "", fmt.Errorf("index lists %d manifests", len(idx.Manifests))
		}
		return idx.Manifests[0].Digest, nil
	}
}
