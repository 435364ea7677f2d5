package workload

import (
	"errors"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

const (
	digestA = digest.Digest("sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	digestB = digest.Digest("sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
)

// Only a reference pinned by digest, without credentials, may come from
// the shared store; everything else goes to its registry.
func TestStoreDigest(t *testing.T) {
	for _, c := range []struct {
		ref   string
		creds bool
		want  digest.Digest
	}{
		{"reg.example/app:1", false, ""}, // a tag anyone may have planted
		{"reg.example/app:1", true, ""},  // private: ask the registry
		{"reg.example/app@" + string(digestA), false, digestA},
		{"reg.example/app:1@" + string(digestA), false, digestA},
		{"reg.example/app@" + string(digestA), true, ""}, // private even if pinned
		{"reg.example/app@sha256:short", false, ""},
		{"", false, ""},
	} {
		if got := storeDigest(c.ref, c.creds); got != c.want {
			t.Errorf("storeDigest(%q, %v) = %q, want %q", c.ref, c.creds, got, c.want)
		}
	}
}

// Another customer's image stored under the pinned name, or one pulled
// with credentials, does not serve the pinned reference.
func TestUsableStored(t *testing.T) {
	img := func(d digest.Digest, labels map[string]string) images.Image {
		return images.Image{Name: "reg.example/app@" + string(digestA), Target: ocispec.Descriptor{Digest: d}, Labels: labels}
	}
	for _, c := range []struct {
		name string
		img  images.Image
		want bool
	}{
		{"the pinned content", img(digestA, nil), true},
		{"planted under the pinned name", img(digestB, nil), false},
		{"pulled with someone's credentials", img(digestA, map[string]string{labelPrivate: "true"}), false},
		{"sent by a customer as an archive", images.Image{Name: importName("job-1", digestA), Target: ocispec.Descriptor{Digest: digestA}}, false},
	} {
		if got := usableStored(digestA, c.img); got != c.want {
			t.Errorf("usableStored(%s, %s) = %v, want %v", digestA, c.name, got, c.want)
		}
	}
	if usableStored("", img("", nil)) {
		t.Error("usableStored with no digest = true, want false")
	}
}

// Credentials go to the reference's registry host only.
func TestScopedCredentials(t *testing.T) {
	for _, c := range []struct {
		ref, host string
		want      bool
	}{
		{"reg.example:5000/app:1", "reg.example:5000", true},
		{"reg.example:5000/app:1", "reg.example", false},
		{"reg.example:5000/app:1", "evil.example", false},
		{"docker.io/library/python:3", "registry-1.docker.io", true},
		{"docker.io/library/python:3", "auth.evil.example", false},
	} {
		creds, err := scopedCredentials(c.ref, "user", "secret")
		if err != nil {
			t.Fatalf("scopedCredentials(%q): %v", c.ref, err)
		}
		u, p, err := creds(c.host)
		if got := err == nil && u == "user" && p == "secret"; got != c.want {
			t.Errorf("credentials for %s asked by %s = %q %q %v, want given %v", c.ref, c.host, u, p, err, c.want)
		}
	}
	if _, err := scopedCredentials("not a reference", "u", "p"); err == nil {
		t.Error("scopedCredentials of a bad reference: no error")
	}
}

func TestCheckRegistryAuth(t *testing.T) {
	for _, c := range []struct {
		auth *apiv1.RegistryAuth
		want error
	}{
		{nil, nil},
		{&apiv1.RegistryAuth{PlainHttp: true}, nil},
		{&apiv1.RegistryAuth{Username: "u", Password: "p"}, nil},
		{&apiv1.RegistryAuth{Username: "u", Password: "p", PlainHttp: true}, ErrCredentialsInClear},
		{&apiv1.RegistryAuth{Password: "token", PlainHttp: true}, ErrCredentialsInClear},
	} {
		if err := checkRegistryAuth(&apiv1.WorkloadSpec{RegistryAuth: c.auth}); !errors.Is(err, c.want) {
			t.Errorf("checkRegistryAuth(%v) = %v, want %v", c.auth, err, c.want)
		}
	}
}

// Imported images get the workload's own name, never one from the
// archive: a customer's archive cannot replace what another runs.
func TestImportName(t *testing.T) {
	if got, want := importName("job-1", digestA), "import.rigos.invalid/job-1@"+string(digestA); got != want {
		t.Errorf("importName = %q, want %q", got, want)
	}
	if d := storeDigest(importName("job-1", digestA), false); d != digestA {
		t.Errorf("storeDigest(importName) = %q, want %q", d, digestA)
	}
}

func TestPickArchiveImage(t *testing.T) {
	one := []archiveImage{{name: "reg.example/a:1", index: 0}}
	two := []archiveImage{{name: "reg.example/a:1", index: 0}, {name: "reg.example/b:1", index: 1}}
	for _, c := range []struct {
		imgs    []archiveImage
		want    string
		index   int
		wantErr bool
	}{
		{one, "", 0, false},
		{one, "reg.example/a:1", 0, false},
		{two, "reg.example/b:1", 1, false},
		{two, "", 0, true},
		{two, "reg.example/c:1", 0, true},
		{nil, "", 0, true},
	} {
		got, err := pickArchiveImage(c.imgs, c.want)
		if (err != nil) != c.wantErr || err == nil && got.index != c.index {
			t.Errorf("pickArchiveImage(%v, %q) = %v, %v; want index %d, error %v", c.imgs, c.want, got, err, c.index, c.wantErr)
		}
	}
}
