package workload

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	imagearchive "github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/layout"
)

// Namespace is the containerd namespace of RigOS workloads.
const Namespace = "rigos"

// Snapshotter is the containerd snapshotter workloads run on.
const Snapshotter = "overlayfs"

// Containerd is the Runtime backed by containerd.
type Containerd struct {
	Socket string
	// Net connects workloads granted network access; nil: none is.
	Net *Network
	// CgroupRoot is where cgroup v2 is mounted (to read OOM kills).
	CgroupRoot string
	// CDIDir holds the CDI specifications GPUs are injected from (the
	// GPU service writes them). Default is layout.CDIDir.
	CDIDir string
	client *containerd.Client
	ids    idRanges
}

func (c *Containerd) connect(ctx context.Context) (*containerd.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	// containerd starts beside the agent: wait for its socket.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(c.Socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd socket %s did not appear", c.Socket)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond): // waiting for a socket, bounded by the deadline
		}
	}
	cl, err := containerd.New(c.Socket, containerd.WithDefaultNamespace(Namespace), containerd.WithTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd: %w", err)
	}
	c.client = cl
	return cl, nil
}

// Prepare implements Runtime. See registry.go for which image a
// reference gets.
func (c *Containerd) Prepare(ctx context.Context, s *apiv1.WorkloadSpec, archive string) (Image, error) {
	if err := checkRegistryAuth(s); err != nil {
		return Image{}, err
	}
	cl, err := c.connect(ctx)
	if err != nil {
		return Image{}, err
	}
	var img containerd.Image
	ref := s.GetImage()
	switch {
	case archive != "":
		img, ref, err = importArchive(ctx, cl, archive, s.GetImage(), s.GetId())
	default:
		if img, err = fromStore(ctx, cl, s); err == nil && img == nil {
			img, err = pull(ctx, cl, s)
		}
	}
	if err != nil {
		return Image{}, err
	}
	if err := img.Unpack(ctx, Snapshotter); err != nil {
		return Image{}, fmt.Errorf("unpacking image %s: %w", ref, err)
	}
	return Image{Ref: ref, Digest: img.Target().Digest.String(), handle: img}, nil
}

// fromStore returns the stored image that may serve s, or nil.
func fromStore(ctx context.Context, cl *containerd.Client, s *apiv1.WorkloadSpec) (containerd.Image, error) {
	d := storeDigest(s.GetImage(), hasCredentials(s.GetRegistryAuth()))
	if d == "" {
		return nil, nil
	}
	imgs, err := cl.ListImages(ctx, "target.digest=="+d.String())
	if err != nil {
		return nil, fmt.Errorf("listing stored images: %w", err)
	}
	for _, i := range imgs {
		if usableStored(d, i.Metadata()) {
			return i, nil
		}
	}
	return nil, nil
}

// importArchive stores the image named want (or the only one) of the
// archive at path under importName, never under the names inside the
// archive, and returns it with its name in the archive.
func importArchive(ctx context.Context, cl *containerd.Client, path, want, id string) (containerd.Image, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	ctx, done, err := cl.WithLease(ctx)
	if err != nil {
		return nil, "", err
	}
	defer done(context.WithoutCancel(ctx))
	cs := cl.ContentStore()
	index, err := imagearchive.ImportIndex(ctx, cs, f)
	if err != nil {
		return nil, "", fmt.Errorf("image archive: %w", err)
	}
	b, err := content.ReadBlob(ctx, cs, index)
	if err != nil {
		return nil, "", fmt.Errorf("image archive: index: %w", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, "", fmt.Errorf("image archive: index: %w", err)
	}
	var named []archiveImage
	for i, m := range idx.Manifests {
		if _, ok := m.Annotations[images.AnnotationManifestSubject]; ok {
			continue // a referrer, not an image
		}
		name := m.Annotations[images.AnnotationImageName]
		if name == "" {
			name = m.Annotations[ocispec.AnnotationRefName]
		}
		if name != "" {
			named = append(named, archiveImage{name: name, index: i})
		}
	}
	pick, err := pickArchiveImage(named, want)
	if err != nil {
		return nil, "", err
	}
	target := idx.Manifests[pick.index]
	// Label the content as the image's children, so that it outlives the
	// import's lease (as containerd's own Import does).
	handler := images.SetChildrenLabels(cs, images.FilterPlatforms(images.ChildrenHandler(cs), platforms.Default()))
	if err := images.WalkNotEmpty(ctx, handler, target); err != nil {
		return nil, "", fmt.Errorf("image archive: %w", err)
	}
	rec := images.Image{Name: importName(id, target.Digest), Target: target}
	is := cl.ImageService()
	stored, err := is.Create(ctx, rec)
	if errdefs.IsAlreadyExists(err) {
		stored, err = is.Update(ctx, rec, "target")
	}
	if err != nil {
		return nil, "", fmt.Errorf("storing image %s: %w", rec.Name, err)
	}
	return containerd.NewImage(cl, stored), pick.name, nil
}

func pull(ctx context.Context, cl *containerd.Client, s *apiv1.WorkloadSpec) (containerd.Image, error) {
	auth := s.GetRegistryAuth()
	creds, err := scopedCredentials(s.GetImage(), auth.GetUsername(), auth.GetPassword())
	if err != nil {
		return nil, err
	}
	ropts := []docker.RegistryOpt{docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(creds)))}
	if auth.GetPlainHttp() {
		ropts = append(ropts, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(ropts...)})
	popts := []containerd.RemoteOpt{containerd.WithResolver(resolver)}
	if hasCredentials(auth) {
		// Never taken from the store for another workload.
		popts = append(popts, containerd.WithPullLabel(labelPrivate, "true"))
	}
	img, err := cl.Pull(ctx, s.GetImage(), popts...)
	switch {
	case errdefs.IsNotFound(err):
		return nil, fmt.Errorf("image not found: %s: %w", s.GetImage(), err)
	case errdefs.IsUnauthorized(err) || err != nil && (strings.Contains(err.Error(), "401 Unauthorized") || strings.Contains(err.Error(), "403 Forbidden")):
		return nil, fmt.Errorf("registry refused the credentials for %s: %w", s.GetImage(), err)
	case err != nil:
		return nil, fmt.Errorf("pulling %s: %w", s.GetImage(), err)
	}
	return img, nil
}

// Run implements Runtime.
func (c *Containerd) Run(ctx context.Context, r RunRequest) (Exit, error) {
	cl, err := c.connect(ctx)
	if err != nil {
		return Exit{}, err
	}
	img := r.Image.handle.(containerd.Image)
	s, id := r.Spec, r.Spec.GetId()
	base, release, err := c.ids.take()
	if err != nil {
		return Exit{}, err
	}
	defer release()
	// The workload's root owns its scratch space, seen from the node as
	// the range's base ID.
	if err := os.Chown(r.Scratch, int(base), int(base)); err != nil {
		return Exit{}, fmt.Errorf("scratch space: %w", err)
	}
	opts := []oci.SpecOpts{
		oci.WithDefaultSpec(), oci.WithDefaultUnixDevices,
		oci.WithImageConfig(img),
		oci.WithCgroup("/" + Namespace + "/" + id),
		oci.WithHostname(id),
		oci.WithUserNamespace(idMap(base), idMap(base)),
	}
	opts = append(opts, confinement()...)
	opts = append(opts,
		oci.WithMounts([]specs.Mount{{
			Destination: "/scratch", Type: "bind", Source: r.Scratch, Options: []string{"rbind", "rw", "nosuid", "nodev"},
		}, {
			Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"},
		}}),
	)
	if s.GetReadOnlyRootfs() {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if len(s.GetArgs()) > 0 {
		opts = append(opts, oci.WithProcessArgs(s.GetArgs()...))
	}
	if len(s.GetEnv()) > 0 {
		opts = append(opts, oci.WithEnv(s.GetEnv()))
	}
	res := s.GetResources()
	if res.GetMemoryBytes() > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(res.GetMemoryBytes())), withNoSwap(res.GetMemoryBytes()))
	}
	if res.GetCpus() > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(int64(res.GetCpus()*period), period))
	}
	pids := res.GetPids()
	if pids <= 0 {
		pids = 1024
	}
	opts = append(opts, oci.WithPidsLimit(pids))
	netPolicy := s.GetNetwork()
	wantsNet := netPolicy.GetOutbound() || len(netPolicy.GetPorts()) > 0
	if wantsNet && c.Net == nil {
		return Exit{}, errors.New("network: this node offers workloads no network")
	}
	if netPolicy.GetOutbound() {
		if _, err := os.Stat("/etc/resolv.conf"); err == nil {
			opts = append(opts, oci.WithMounts([]specs.Mount{{
				Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "ro"},
			}}))
		}
	}
	if len(r.GPUs) > 0 {
		var devs []string
		for _, g := range r.GPUs {
			devs = append(devs, fmt.Sprintf("nvidia.com/gpu=%d", g))
		}
		opts = append(opts, withCDIDevices(cmp.Or(c.CDIDir, layout.CDIDir), devs...))
	}

	cont, err := cl.NewContainer(ctx, id,
		containerd.WithSnapshotter(Snapshotter),
		containerd.WithNewSnapshot(id, img, containerd.WithUserNSRemapperLabels(idMap(base), idMap(base))),
		containerd.WithNewSpec(opts...))
	if err != nil {
		return Exit{}, fmt.Errorf("creating the container: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = cont.Delete(dctx, containerd.WithSnapshotCleanup) // the writable layer goes with it
	}()
	spec, err := cont.Spec(ctx)
	if err != nil {
		return Exit{}, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return Exit{}, err
	}
	sum := sha256.Sum256(b)
	if err := r.Measure("sha256:" + hex.EncodeToString(sum[:])); err != nil {
		return Exit{}, err
	}
	task, err := cont.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, writerFunc(r.Stdout), writerFunc(r.Stderr))))
	if err != nil {
		return Exit{}, fmt.Errorf("creating the task: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = task.Delete(dctx, containerd.WithProcessKill)
	}()
	if wantsNet {
		// The task exists (its namespaces too) but has not started.
		detach, err := c.Net.Attach(id, int(task.Pid()), netPolicy.GetOutbound(), netPolicy.GetPorts())
		if err != nil {
			return Exit{}, err
		}
		defer detach()
	}
	exitCh, err := task.Wait(context.WithoutCancel(ctx))
	if err != nil {
		return Exit{}, err
	}
	if err := task.Start(ctx); err != nil {
		return Exit{}, fmt.Errorf("starting the task: %w", err)
	}
	r.Started(func() {
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = task.Kill(kctx, syscall.SIGKILL, containerd.WithKillAll)
	})
	st := <-exitCh
	code, _, err := st.Result()
	if err != nil {
		return Exit{}, err
	}
	oom := c.oomKills(id) > 0
	// Let the output copy finish before the task is deleted.
	if tio := task.IO(); tio != nil {
		tio.Wait()
	}
	return Exit{Code: int(code), OOMKilled: oom}, nil
}

// Cleanup implements Runtime.
func (c *Containerd) Cleanup(ctx context.Context) ([]string, error) {
	cl, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	conts, err := cl.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	var ids []string
	var errs []error
	for _, cont := range conts {
		ids = append(ids, cont.ID())
		if task, err := cont.Task(ctx, nil); err == nil {
			_ = task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				errs = append(errs, fmt.Errorf("deleting the task of %s: %w", cont.ID(), err))
			}
		}
		if err := cont.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting container %s: %w", cont.ID(), err))
		}
	}
	return ids, errors.Join(errs...)
}

// oomKills reads the container cgroup's OOM kill count.
func (c *Containerd) oomKills(id string) int {
	root := c.CgroupRoot
	if root == "" {
		root = layout.CgroupRoot
	}
	f, err := os.Open(filepath.Join(root, Namespace, id, "memory.events"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// Capabilities are the capabilities a workload's processes hold (as
// root in the container; there is no user namespace yet, so they are
// the node's root's, bounded by the container's namespaces, cgroup and
// seccomp). Of containerd's 14 defaults, what a GPU job and its
// entrypoint scripts use: file ownership and permission overrides in
// its own rootfs (CHOWN, DAC_OVERRIDE, FOWNER, FSETID), dropping to
// another user (SETUID, SETGID), signalling its own processes (KILL),
// and serving on a port below 1024 (NET_BIND_SERVICE). Dropped: NET_RAW
// (raw sockets: spoofed sources, ARP and ICMP tricks on its link), MKNOD
// (device nodes), SETFCAP and SETPCAP (file and bounding-set
// capabilities, useless under no_new_privs), SYS_CHROOT, AUDIT_WRITE.
var Capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE",
}

// confinement is what holds every workload in, beyond its namespaces
// and limits.
func confinement() []oci.SpecOpts {
	return []oci.SpecOpts{
		// Its own cgroup namespace: the workload sees its own limits at
		// /sys/fs/cgroup and nothing of the node's cgroup tree.
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(Capabilities),
		// containerd's default seccomp profile (the one Docker and CRI
		// use): no kernel keyring, no io_uring, no mount, no ptrace...
		// It follows the capabilities (it allows some calls by them).
		seccomp.WithDefaultProfile(),
	}
}

// withNoSwap sets memory+swap to the memory limit: a workload at its
// limit is OOM-killed rather than swapped.
func withNoSwap(limit int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Memory == nil {
			return errors.New("memory limit not set")
		}
		s.Linux.Resources.Memory.Swap = &limit
		return nil
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		n := min(len(b), 16<<10)
		f(append([]byte(nil), b[:n]...))
		b = b[n:]
	}
	return total, nil
}

func freeBytes(dir string) int64 {
	for d := dir; ; d = filepath.Dir(d) {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err == nil {
			return int64(st.Bavail) * st.Bsize
		}
		if d == "/" || d == "." {
			return 0
		}
	}
}

// withCDIDevices injects CDI devices from the specifications in dir.
// The spec is built here, in the agent, not in the containerd daemon, so
// containerd's own CDI settings do not apply, and containerd's
// cdi.WithCDIDevices reads the CDI library's default folders (/etc/cdi,
// /var/run/cdi), where RigOS writes nothing.
func withCDIDevices(dir string, devices ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
		if err != nil {
			return fmt.Errorf("reading the CDI specifications in %s: %w", dir, err)
		}
		if _, err := cache.InjectDevices(s, devices...); err != nil {
			return fmt.Errorf("injecting GPUs %v from %s: %w", devices, dir, err)
		}
		return nil
	}
}
