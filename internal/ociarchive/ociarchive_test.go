package ociarchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
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

func TestRegistryServesTheImage(t *testing.T) {
	var a bytes.Buffer
	if err := Write(&a, Image{Name: "x:1", Files: map[string]File{"bin": {Mode: 0o755, Data: []byte("x")}}, Entrypoint: []string{"/bin"}}); err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(a.Bytes(), "rigos/x", "1", "u", "p")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()
	get := func(path, user, pass string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	if resp, _ := get("/v2/", "u", "wrong"); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("wrong password: %d", resp.StatusCode)
	}
	resp, m := get("/v2/rigos/x/manifests/1", "u", "p")
	d, _ := ManifestDigest(a.Bytes())
	sum := sha256.Sum256(m)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d || "sha256:"+hex.EncodeToString(sum[:]) != d {
		t.Errorf("manifest: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	if resp, _ := get("/v2/rigos/x/manifests/2", "u", "p"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown tag: %d", resp.StatusCode)
	}
	if resp, _ := get("/v2/rigos/x/blobs/sha256:00", "u", "p"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown blob: %d", resp.StatusCode)
	}
}
