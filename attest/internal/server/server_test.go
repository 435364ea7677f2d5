package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/rigos/rigos/attest/internal/config"
	"github.com/rigos/rigos/attest/internal/devinit"
	"github.com/rigos/rigos/attest/internal/ekroots"
	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/internal/sim/tpmsim"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/keyfile"
	"github.com/rigos/rigos/pkg/session"
)

// The daemon as configured by devinit: keys, manifests, TLS, SQLite.
func TestDaemonFromDevSetup(t *testing.T) {
	if !tpmsim.Available {
		t.Skip("TPM simulator needs cgo")
	}
	dir := t.TempDir()
	if err := devinit.Write(devinit.Options{Dir: dir, Listen: "127.0.0.1:0", NodeID: "rig-1",
		SpotMean: "50ms", SpotMin: "10ms", SpotMax: "200ms", Deadline: "5s",
		Manifests: []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev-simulated")}}); err != nil {
		t.Fatal(err)
	}
	// A manifest signed by nobody we trust sits beside the good one.
	good, _ := os.ReadFile(filepath.Join(dir, "manifests", "dev-simulated.json"))
	bad := strings.Replace(string(good), `"signature": "`, `"signature": "AAAA`, 1)
	os.WriteFile(filepath.Join(dir, "manifests", "tampered.json"), []byte(bad), 0o600)

	cfg, err := config.Load(filepath.Join(dir, "attest.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Manifests.Active()); n != 1 {
		t.Fatalf("%d active manifests, want 1 (the tampered one rejected)", n)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	}()

	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := grpc.NewClient(d.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node, err := simnode.Start(1, devboot.Default(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	trusted := make(chan struct{})
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	done := make(chan struct{})
	defer func() { scancel(); <-done }() // before the node's TPM closes
	go func() {
		defer close(done)
		session.Run(sctx, apiv1.NewAttestationClient(conn), session.Node{
			ID: "rig-1", TPM: node.Att, RuntimeLog: node.ReadRuntimeLog,
			OnVerdict: func(v *apiv1.Verdict) {
				if v.GetState() == apiv1.NodeState_NODE_STATE_TRUSTED {
					select {
					case <-trusted:
					default:
						close(trusted)
					}
				}
			},
		})
	}()
	select {
	case <-trusted:
	case <-sctx.Done():
		t.Fatal("node not trusted within a minute")
	}
}

// Private keys readable by others are refused with what to do; the admin
// socket is the owner's alone.
func TestKeyFilesAndAdminSocket(t *testing.T) {
	dir := t.TempDir()
	if err := devinit.Write(devinit.Options{Dir: dir, Listen: "127.0.0.1:0", NodeID: "rig-1", SpotMean: "1m", SpotMin: "1m", SpotMax: "1m", Deadline: "5s",
		Manifests: []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev-simulated")}}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, "attest.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{cfg.SigningKey, cfg.TLSKey} {
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if !errors.Is(err, keyfile.ErrExposed) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("New() with %s mode 0644 = %v, want ErrExposed saying chmod 600", filepath.Base(key), err)
		}
		os.Chmod(key, 0o600)
	}
	// A socket folder others may enter does not widen the socket.
	sockDir := filepath.Join(dir, "run")
	if err := os.Mkdir(sockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o777)
	cfg.AdminSocket = filepath.Join(sockDir, "admin.sock")
	d, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(cfg.AdminSocket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(sockDir)
	if len(entries) != 1 {
		t.Errorf("socket folder holds %d entries, want only the socket", len(entries))
	}
	d.adminLis.Close()
	d.agentLis.Close()
	d.db.Close()
	if _, err := os.Stat(cfg.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind after close: %v", err)
	}
}

// A reload (SIGHUP) reads the manifest keys again: a manifest signed by a
// key added since start becomes active, and a retired build is kept
// apart with its reason.
func TestManifestReloadReadsKeys(t *testing.T) {
	dir := t.TempDir()
	if err := devinit.Write(devinit.Options{Dir: dir, Listen: "127.0.0.1:0", NodeID: "rig-1", SpotMean: "1m", SpotMin: "1m", SpotMax: "1m", Deadline: "5s",
		Manifests: []*attestation.Manifest{devboot.Manifest(devboot.Default(), "dev-simulated")}}); err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(dir, "manifests")
	newKey := filepath.Join(dir, "new.pub")
	ms := NewManifests(mdir, []string{filepath.Join(dir, "manifest.pub"), newKey},
		attestation.Retirement{Builds: []string{"dev-simulated"}}, slog.New(slog.DiscardHandler))
	if _, err := ms.Reload(); err == nil {
		t.Fatal("Reload() with a missing key file = nil, want an error")
	}
	priv, pub, err := keyfile.NewEd25519()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(newKey, pub, 0o644)
	os.WriteFile(filepath.Join(dir, "new.key"), priv, 0o600)
	key, err := keyfile.ReadEd25519Private(filepath.Join(dir, "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := attestation.SignManifest(devboot.Manifest(devboot.Default(), "next"), key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mdir, "next.json"), signed, 0o600)
	n, err := ms.Reload()
	if err != nil || n != 1 || ms.Active()[0].Build != "next" {
		t.Fatalf("Reload() = %d, %v; active %v; want only build next", n, err, ms.Active())
	}
	retired, why := ms.Retired()
	if len(retired) != 1 || !strings.Contains(why["dev-simulated"], "retired") {
		t.Errorf("Retired() = %v, %v; want dev-simulated retired", retired, why)
	}
}

func TestEKPools(t *testing.T) {
	bundled, _, err := ekroots.Pools()
	if err != nil {
		t.Fatal(err)
	}
	off := false
	for name, tc := range map[string]struct {
		cfg       config.Config
		wantRoots int
	}{
		"default: built-in bundle": {config.Config{}, len(bundled.Subjects())},
		"built-in off, no files":   {config.Config{EKRootsBuiltin: &off}, 0},
	} {
		roots, _, err := EKPools(&tc.cfg)
		if err != nil {
			t.Fatalf("EKPools(%s) = %v", name, err)
		}
		got := 0
		if roots != nil {
			got = len(roots.Subjects())
		}
		if got != tc.wantRoots {
			t.Errorf("EKPools(%s) = %d roots, want %d", name, got, tc.wantRoots)
		}
	}
	if _, _, err := EKPools(&config.Config{EKRoots: []string{filepath.Join(t.TempDir(), "missing.pem")}}); err == nil || !strings.Contains(err.Error(), "ek_roots") {
		t.Errorf("EKPools(missing file) = %v, want an ek_roots error", err)
	}
}
