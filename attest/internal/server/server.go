// Package server runs the verifier daemon: the TLS gRPC endpoint agents
// dial, the admin API on a Unix socket, and the manifest directory.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/rigos/rigos/attest/internal/ekroots"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/rigos/rigos/attest/internal/config"
	"github.com/rigos/rigos/attest/internal/store"
	"github.com/rigos/rigos/attest/internal/verifier"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/keyfile"
)

// MaxMessage bounds one message from an agent (evidence with logs).
const MaxMessage = 4 << 20

// Manifests holds the reference manifests, reloadable: the folder and
// the trusted manifest keys are read again on every Reload (SIGHUP).
type Manifests struct {
	dir      string
	keyPaths []string
	retire   attestation.Retirement
	log      *slog.Logger
	now      func() time.Time
	cur      atomic.Pointer[[]*attestation.Manifest] // every valid one
}

// NewManifests returns the manifests of dir signed by one of the keys at
// keyPaths, with retire applied; call Reload to load them.
func NewManifests(dir string, keyPaths []string, retire attestation.Retirement, log *slog.Logger) *Manifests {
	return &Manifests{dir: dir, keyPaths: keyPaths, retire: retire, log: log, now: time.Now}
}

// Reload reads the manifest keys and every *.json in the directory. A
// manifest that does not verify is reported and skipped; the others
// stay. A key that cannot be read fails the reload, which leaves the
// previous manifests in force. It returns how many manifests are active.
func (m *Manifests) Reload() (int, error) {
	var keys []ed25519.PublicKey
	for _, p := range m.keyPaths {
		k, err := keyfile.ReadEd25519Public(p)
		if err != nil {
			return 0, fmt.Errorf("manifest key: %w", err)
		}
		keys = append(keys, k)
	}
	paths, err := filepath.Glob(filepath.Join(m.dir, "*.json"))
	if err != nil {
		return 0, err
	}
	sort.Strings(paths)
	var out []*attestation.Manifest
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			var man *attestation.Manifest
			if man, err = attestation.ParseManifest(b, keys); err == nil {
				out = append(out, man)
				if why := m.retire.Retired(man, m.now()); why != "" {
					m.log.Warn("manifest retired", "file", p, "build", man.Build, "why", why)
				} else {
					m.log.Info("manifest active", "file", p, "build", man.Build)
				}
				continue
			}
		}
		m.log.Error("manifest rejected", "file", p, "err", err)
	}
	m.cur.Store(&out)
	return len(m.Active()), nil
}

func (m *Manifests) all() []*attestation.Manifest {
	if p := m.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// Active returns the manifests in force now.
func (m *Manifests) Active() []*attestation.Manifest {
	var out []*attestation.Manifest
	now := m.now()
	for _, man := range m.all() {
		if m.retire.Retired(man, now) == "" {
			out = append(out, man)
		}
	}
	return out
}

// Retired returns the retired manifests and why, by build.
func (m *Manifests) Retired() ([]*attestation.Manifest, map[string]string) {
	var out []*attestation.Manifest
	why := map[string]string{}
	now := m.now()
	for _, man := range m.all() {
		if w := m.retire.Retired(man, now); w != "" {
			out = append(out, man)
			why[man.Build] = w
		}
	}
	return out, why
}

// EKPools returns the EK roots and intermediates the verifier trusts: the
// built-in bundle (unless ek_roots_builtin is false) and the files
// ek_roots and ek_intermediates name. roots is nil when there are none:
// every EK is then dev-class.
func EKPools(cfg *config.Config) (roots, inter *x509.CertPool, err error) {
	if cfg.UseBuiltinEKRoots() {
		if roots, inter, err = ekroots.Pools(); err != nil {
			return nil, nil, fmt.Errorf("built-in EK roots: %w", err)
		}
	}
	add := func(pool *x509.CertPool, name string, paths []string) (*x509.CertPool, error) {
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("%s: %s: no PEM certificates", name, p)
			}
		}
		return pool, nil
	}
	if roots, err = add(roots, "ek_roots", cfg.EKRoots); err != nil {
		return nil, nil, err
	}
	if inter, err = add(inter, "ek_intermediates", cfg.EKIntermediates); err != nil {
		return nil, nil, err
	}
	return roots, inter, nil
}

// Daemon is a configured, listening verifier.
type Daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	db        store.Store
	v         *verifier.Verifier
	Manifests *Manifests
	agents    *grpc.Server
	admin     *grpc.Server
	agentLis  net.Listener
	adminLis  net.Listener
}

// New opens the store, loads keys and manifests and starts listening.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	signing, err := keyfile.ReadEd25519Private(cfg.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	roots, inter, err := EKPools(cfg)
	if err != nil {
		return nil, err
	}
	if err := keyfile.CheckPrivate(cfg.TLSKey); err != nil {
		return nil, fmt.Errorf("tls_key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	ms := NewManifests(cfg.ManifestDir, cfg.ManifestKeys, attestation.Retirement{Builds: cfg.RetiredBuilds, MinCreated: cfg.MinBuildCreated}, log)
	n, err := ms.Reload()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		log.Warn("no valid manifest: every appraisal will fail until one is added", "dir", cfg.ManifestDir)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Database), 0o700); err != nil {
		return nil, err
	}
	db, err := store.OpenSQLite(cfg.Database)
	if err != nil {
		return nil, err
	}
	v, err := verifier.New(ctx, verifier.Options{
		Store: db, Manifests: ms.Active, Retired: ms.Retired, UpdateDir: cfg.UpdateDir, UpdateURL: cfg.UpdateURL, SigningKey: signing, Roots: roots, Intermediates: inter, Logger: log,
		EvidenceDir: cfg.EvidenceDir,
		Policy: verifier.Policy{
			PCRs: cfg.PCRs, MeanInterval: cfg.SpotCheck.Mean.D(), MinInterval: cfg.SpotCheck.Min.D(),
			MaxInterval: cfg.SpotCheck.Max.D(), Deadline: cfg.SpotCheck.Deadline.D(),
			HandshakeTimeout: cfg.HandshakeTimeout.D(), AllowDev: cfg.AllowDev, RefuseDev: cfg.RefuseDev,
			EnrolRate: cfg.Enrolment.Rate, EnrolBurst: cfg.Enrolment.Burst, MaxHandshakes: cfg.Enrolment.MaxHandshakes,
		},
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, db: db, v: v, Manifests: ms}
	d.agents = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})),
		grpc.MaxRecvMsgSize(MaxMessage),
		// One session per agent connection; a few spare for reconnects.
		grpc.MaxConcurrentStreams(cfg.StreamsPerConnection),
		// Agents sit behind NAT: let them ping to keep the stream open.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	)
	apiv1.RegisterAttestationServer(d.agents, v)
	// Image archives for workloads come through the admin socket.
	d.admin = grpc.NewServer(grpc.MaxRecvMsgSize(apiv1.MaxImageArchive + 1<<20))
	apiv1.RegisterAdminServer(d.admin, v.Admin())
	if d.agentLis, err = net.Listen("tcp", cfg.Listen); err != nil {
		db.Close()
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.AdminSocket), 0o700); err != nil {
		d.agentLis.Close()
		db.Close()
		return nil, err
	}
	if d.adminLis, err = listenPrivate(cfg.AdminSocket); err != nil {
		d.agentLis.Close()
		db.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return d, nil
}

// listenPrivate listens on a Unix socket at path that is mode 0600 from
// the moment it appears there: it is created in a fresh private folder,
// restricted, then renamed into place, so no other user can connect in
// between. Closing the listener removes it.
func listenPrivate(path string) (net.Listener, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".admin-") // mode 0700
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	p := filepath.Join(tmp, "sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, err
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(p, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(p, path); err != nil {
		l.Close()
		return nil, err
	}
	return &unlinkListener{UnixListener: ul, path: path}, nil
}

type unlinkListener struct {
	*net.UnixListener
	path string
}

func (l *unlinkListener) Close() error {
	err := l.UnixListener.Close()
	_ = os.Remove(l.path)
	return err
}

// Addr is the agents' listening address.
func (d *Daemon) Addr() net.Addr { return d.agentLis.Addr() }

// Serve runs until ctx ends, then stops gracefully.
func (d *Daemon) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- d.agents.Serve(d.agentLis) }()
	go func() { errc <- d.admin.Serve(d.adminLis) }()
	go d.v.Run(ctx)
	d.log.Info("verifier listening", "agents", d.agentLis.Addr().String(), "admin", d.cfg.AdminSocket)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopped := make(chan struct{})
	go func() {
		d.agents.GracefulStop()
		d.admin.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		d.agents.Stop()
		d.admin.Stop()
	}
	_ = os.Remove(d.cfg.AdminSocket)
	return errors.Join(err, d.db.Close())
}
