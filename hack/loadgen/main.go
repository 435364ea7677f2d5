// Command loadgen measures the verifier under load: it starts the real
// attest binary (SQLite store, TLS on loopback) and connects many
// simulated nodes, each with a software TPM (internal/sim/softtpm, dev class)
// that goes through the verifier's full path: enrolment with credential
// activation, then randomised challenges, quotes and appraisals. It
// prints enrolment time, appraisals/s, verdict latency percentiles and
// the verifier's memory.
//
//	go run ./hack/loadgen -nodes 1000 -duration 30s
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/softtpm"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/session"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	nodes := flag.Int("nodes", 1000, "simulated nodes")
	mean := flag.Duration("mean", 0, "mean spot-check interval (default: nodes/400 s, about 400 appraisals/s)")
	duration := flag.Duration("duration", 30*time.Second, "measurement window after enrolment")
	perConn := flag.Int("per-conn", 250, "nodes sharing one gRPC connection")
	port := flag.Int("port", 17443, "verifier port on 127.0.0.1")
	flag.Parse()
	if *mean == 0 {
		*mean = time.Duration(float64(*nodes) / 400 * float64(time.Second))
	}
	dir, err := os.MkdirTemp("", "rigos-loadgen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "attest")
	// The development build: its devinit signs the simulated boot's
	// manifest, which the software TPMs' logs replay to.
	if out, err := exec.Command("go", "build", "-tags", "sim", "-o", bin, "./attest").CombinedOutput(); err != nil {
		return fmt.Errorf("building attest: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	minI, maxI := *mean/4, *mean*4
	if out, err := exec.Command(bin, "devinit", "-dir", dir, "-listen", addr, "-mean", mean.String(),
		"-min", minI.String(), "-max", maxI.String(), "-deadline", "30s").CombinedOutput(); err != nil {
		return fmt.Errorf("devinit: %v\n%s", err, out)
	}
	// Every simulated node is a new TPM: lift the enrolment rate limit
	// (a production verifier keeps it) so the load is the appraisals'.
	if err := unlimitEnrolment(filepath.Join(dir, "attest.json"), *nodes); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, bin, "serve", "-config", filepath.Join(dir, "attest.json"))
	logf, _ := os.Create(filepath.Join(dir, "attest.log"))
	srv.Stderr = logf
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = srv.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "admin.sock")); err == nil {
			break
		}
		if i > 200 {
			return fmt.Errorf("verifier did not start")
		}
		time.Sleep(50 * time.Millisecond) // waiting for a process to bind, bounded
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)

	fmt.Printf("loadgen: %d nodes, mean spot-check interval %s (clamped %s..%s)\n", *nodes, *mean, minI, maxI)
	tpms := make([]*softtpm.TPM, *nodes)
	for i := range tpms {
		if tpms[i], err = softtpm.New(devboot.Default()); err != nil {
			return err
		}
	}
	var conns []apiv1.AttestationClient
	for i := 0; i < (*nodes+*perConn-1) / *perConn; i++ {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, apiv1.NewAttestationClient(c))
	}

	var (
		mu         sync.Mutex
		latencies  []time.Duration
		measuring  atomic.Bool
		trusted    atomic.Int64
		failures   atomic.Int64
		sent       sync.Map // node -> time evidence was sent
		enrolStart = time.Now()
		allTrusted = make(chan struct{})
		once       sync.Once
		wg         sync.WaitGroup
	)
	for i, t := range tpms {
		id := fmt.Sprintf("load-%05d", i)
		first := true
		n := session.Node{ID: id, TPM: t,
			OnChallenge: func(_ *apiv1.Challenge, ev *apiv1.Evidence) *apiv1.Evidence {
				sent.Store(id, time.Now())
				return ev
			},
			OnVerdict: func(v *apiv1.Verdict) {
				if v.GetState() != apiv1.NodeState_NODE_STATE_TRUSTED {
					failures.Add(1)
					return
				}
				if first {
					first = false
					if trusted.Add(1) == int64(*nodes) {
						once.Do(func() { close(allTrusted) })
					}
				}
				if s, ok := sent.Load(id); ok && measuring.Load() {
					mu.Lock()
					latencies = append(latencies, time.Since(s.(time.Time)))
					mu.Unlock()
				}
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = session.Run(ctx, conns[i%len(conns)], n)
		}()
	}
	select {
	case <-allTrusted:
	case <-time.After(10 * time.Minute):
		return fmt.Errorf("only %d of %d nodes trusted after 10 minutes", trusted.Load(), *nodes)
	}
	enrol := time.Since(enrolStart)
	fmt.Printf("enrolment: %d nodes enrolled and trusted in %s (%.0f nodes/s)\n", *nodes, enrol.Round(time.Millisecond), float64(*nodes)/enrol.Seconds())
	measuring.Store(true)
	time.Sleep(*duration) // the measurement window itself
	measuring.Store(false)
	mu.Lock()
	l := slices.Clone(latencies)
	mu.Unlock()
	slices.Sort(l)
	pct := func(p float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))]
	}
	fmt.Printf("spot checks: %d appraisals in %s = %.0f appraisals/s; verdict latency p50 %s p99 %s; %d non-trusted verdicts\n",
		len(l), *duration, float64(len(l))/duration.Seconds(), pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), failures.Load())
	rss, hwm := procMem(srv.Process.Pid)
	fmt.Printf("verifier memory: RSS %s, peak %s (%.1f KiB per node)\n", rss, hwm, kib(rss)/float64(*nodes))
	cancel()
	wg.Wait()
	return nil
}

func procMem(pid int) (rss, hwm string) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[0] == "VmRSS:" {
			rss = fields[1] + " kB"
		}
		if len(fields) >= 3 && fields[0] == "VmHWM:" {
			hwm = fields[1] + " kB"
		}
	}
	return rss, hwm
}

func kib(s string) float64 {
	var v float64
	fmt.Sscanf(s, "%f", &v)
	return v
}

// unlimitEnrolment sets the enrolment limits of the config at path high
// enough for n new TPMs at once, over shared connections.
func unlimitEnrolment(path string, n int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	cfg["enrolment"] = map[string]any{"rate": float64(n), "burst": n, "max_handshakes": n}
	cfg["streams_per_connection"] = n // nodes share connections here
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
