package ociarchive

import (
	"archive/tar"
	"bytes"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Registry serves one image from an archive written by Write over the
// OCI distribution API (pull only), behind HTTP basic authentication.
// Tests use it for the node's registry pull path.
type Registry struct {
	Repo, Tag  string
	User, Pass string
	manifest   string // digest
	blobs      map[string][]byte
}

// NewRegistry serves the image in archive as repo:tag.
func NewRegistry(archive []byte, repo, tag, user, pass string) (*Registry, error) {
	r := &Registry{Repo: repo, Tag: tag, User: user, Pass: pass, blobs: map[string][]byte{}}
	var err error
	if r.manifest, err = ManifestDigest(archive); err != nil {
		return nil, err
	}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if d, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			r.blobs["sha256:"+d] = b
		}
	}
	if _, ok := r.blobs[r.manifest]; !ok {
		return nil, fmt.Errorf("archive lacks its manifest blob %s", r.manifest)
	}
	return r, nil
}

// authorized checks basic authentication; a registry with no user and
// no password is open to anyone.
func (r *Registry) authorized(req *http.Request) bool {
	if r.User == "" && r.Pass == "" {
		return true
	}
	u, p, ok := req.BasicAuth()
	return ok && subtle.ConstantTimeCompare([]byte(u), []byte(r.User)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(r.Pass)) == 1
}

// ServeHTTP implements the pull side of the distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "pull only", http.StatusMethodNotAllowed)
		return
	}
	if !r.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Basic realm="rigos-test-registry"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	path := req.URL.Path
	if path == "/v2/" || path == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	prefix := "/v2/" + r.Repo + "/"
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		http.Error(w, "unknown repository", http.StatusNotFound)
		return
	}
	var digest, mediaType string
	switch {
	case strings.HasPrefix(rest, "manifests/"):
		ref := strings.TrimPrefix(rest, "manifests/")
		if ref != r.Tag && ref != r.manifest {
			http.Error(w, "manifest unknown", http.StatusNotFound)
			return
		}
		digest, mediaType = r.manifest, "application/vnd.oci.image.manifest.v1+json"
	case strings.HasPrefix(rest, "blobs/"):
		digest, mediaType = strings.TrimPrefix(rest, "blobs/"), "application/octet-stream"
	default:
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	b, ok := r.blobs[digest]
	if !ok {
		http.Error(w, "blob unknown", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}
