package ociarchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
)

func TestWriteIsDeterministicAndConsistent(t *testing.T) {
	img := Image{Name: "rigos.test/x:1", Files: map[string]File{"bin": {Mode: 0o755, Data: []byte("#!")}}, Entrypoint: []string{"/bin"}}
	var a, b bytes.Buffer
	if err := Write(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes differ")
	}
	d, err := ManifestDigest(a.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// Every blob is stored under its own digest, the manifest included.
	tr := tar.NewReader(bytes.NewReader(a.Bytes()))
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, "blobs/sha256/") {
			continue
		}
		data, _ := io.ReadAll(tr)
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != strings.TrimPrefix(h.Name, "blobs/sha256/") {
			t.Errorf("blob %s has another digest", h.Name)
		}
		found = found || "sha256:"+hex.EncodeToString(sum[:]) == d
	}
	if !found {
		t.Errorf("manifest %s not among the blobs", d)
	}
	if err := Write(io.Discard, Image{Name: "x"}); err == nil {
		t.Error("an image without an entrypoint was written")
	}
	if _, err := ManifestDigest([]byte("not a tar")); err == nil {
		t.Error("ManifestDigest accepted garbage")
	}
}
