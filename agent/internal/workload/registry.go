package workload

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/opencontainers/go-digest"

	"github.com/rigos/rigos/pkg/api/apiv1"
)

// Workloads of different customers share the node's containerd image
// store. What one workload brings must never become what another runs,
// and a private image must not run without its credentials:
//
//   - an image archive is stored under a name of the workload's own
//     (importName), never under the names inside it, so it overwrites
//     nothing stored;
//   - a reference pinned by digest (name@sha256:...) is taken from the
//     store only as an image whose target is that digest and that was
//     not pulled with credentials (storeDigest, usableStored);
//   - every other reference, and every reference that comes with
//     credentials, is resolved at its registry with the workload's own
//     credentials (a re-pull of present layers fetches only manifests).
//
// Not guaranteed: a customer who knows the digest of an image another
// customer sent as an archive can run it by digest.

// labelPrivate marks an image pulled with credentials: it is never
// taken from the store for another workload.
const labelPrivate = "rigos.io/pulled-with-credentials"

// importHost names the images of archives: importHost/<workload>@<digest>.
// The .invalid domain is never resolved, so no registry can serve it.
const importHost = "import.rigos.invalid"

func importName(id string, d digest.Digest) string { return importHost + "/" + id + "@" + d.String() }

// ErrCredentialsInClear refuses registry credentials that would cross
// the network in clear (plain HTTP).
var ErrCredentialsInClear = errors.New("registry credentials over plain HTTP refused: they would cross the network in clear (use HTTPS, or no credentials)")

func hasCredentials(a *apiv1.RegistryAuth) bool {
	return a.GetUsername() != "" || a.GetPassword() != ""
}

// checkRegistryAuth reports a workload spec's registry settings the
// node refuses.
func checkRegistryAuth(s *apiv1.WorkloadSpec) error {
	if a := s.GetRegistryAuth(); a.GetPlainHttp() && hasCredentials(a) {
		return ErrCredentialsInClear
	}
	return nil
}

// storeDigest returns the digest under which ref may be taken from the
// image store, or "" when it must be resolved at its registry: only a
// reference pinned by digest, asked for without credentials, may come
// from the store.
func storeDigest(ref string, withCredentials bool) digest.Digest {
	if withCredentials {
		return ""
	}
	spec, err := reference.Parse(ref)
	if err != nil {
		return ""
	}
	d := spec.Digest()
	if d.Validate() != nil {
		return ""
	}
	return d
}

// usableStored says whether stored image img may serve a reference
// pinned to digest d: one pulled from a registry without credentials.
// An image a customer sent as an archive stays theirs (knowing its digest
// is not enough), and so does one pulled with credentials.
func usableStored(d digest.Digest, img images.Image) bool {
	return d != "" && img.Target.Digest == d && img.Labels[labelPrivate] == "" &&
		!strings.HasPrefix(img.Name, importHost+"/")
}

// scopedCredentials returns the registry credential callback for ref:
// it gives user and password only to ref's own registry host (Docker
// Hub's registry for docker.io), nothing to any other host that asks
// (a redirect, a mirror, a token realm elsewhere).
func scopedCredentials(ref, user, password string) (func(host string) (string, string, error), error) {
	spec, err := reference.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	want := spec.Hostname()
	return func(host string) (string, string, error) {
		if strings.EqualFold(host, want) || want == "docker.io" && strings.EqualFold(host, "registry-1.docker.io") {
			return user, password, nil
		}
		return "", "", nil
	}, nil
}

// archiveImage is one image named in an image archive's index.
type archiveImage struct {
	name  string
	index int // in the index's manifests
}

// pickArchiveImage chooses the image named want (or the only image when
// want is empty) among those an archive names.
func pickArchiveImage(imgs []archiveImage, want string) (archiveImage, error) {
	if len(imgs) == 0 {
		return archiveImage{}, errors.New("image archive names no image (io.containerd.image.name or org.opencontainers.image.ref.name)")
	}
	var names []string
	for _, i := range imgs {
		names = append(names, i.name)
		if want == "" && len(imgs) == 1 || i.name == want {
			return i, nil
		}
	}
	if want == "" {
		return archiveImage{}, fmt.Errorf("image archive holds %d images %v: name one", len(imgs), names)
	}
	return archiveImage{}, fmt.Errorf("image not found: %s is not in the archive (it holds %v)", want, names)
}
