package workload

import (
	"context"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/go-cmp/cmp"
)

// The OCI spec a workload gets holds only the capabilities a GPU job
// needs: no raw sockets, no device nodes.
func TestConfinementCapabilities(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), Namespace)
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "job"}, append([]oci.SpecOpts{oci.WithDefaultSpec()}, confinement()...)...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"}
	c := spec.Process.Capabilities
	for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "permitted": c.Permitted} {
		got := slices.Sorted(slices.Values(set))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s capabilities (-want +got):\n%s", name, diff)
		}
	}
	for _, set := range [][]string{c.Inheritable, c.Ambient} {
		for _, bad := range []string{"CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_ADMIN"} {
			if slices.Contains(set, bad) {
				t.Errorf("inheritable or ambient capabilities hold %s", bad)
			}
		}
	}
	if !spec.Process.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	if spec.Linux.Seccomp == nil || len(spec.Linux.Seccomp.Syscalls) == 0 {
		t.Error("no seccomp profile")
	}
}
