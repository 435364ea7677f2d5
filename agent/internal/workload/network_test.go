package workload

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A peer is this test binary re-executed in a network namespace of its
// own: it answers TCP connections on a port with its name and the
// caller's address, and on "dial ADDR" lines dials ADDR and prints what
// it got.
const peerEnv = "RIGOS_NETTEST_PEER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(peerEnv); spec != "" {
		runPeer(spec)
		return
	}
	os.Exit(m.Run())
}

func runPeer(spec string) {
	name, port, _ := strings.Cut(spec, ":")
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s sees %s\n", name, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		addr, ok := strings.CutPrefix(sc.Text(), "dial ")
		if !ok {
			continue
		}
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			fmt.Println("error")
			continue
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			fmt.Println("error")
			continue
		}
		fmt.Print(b)
	}
}

type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startPeer starts a peer in a new network namespace below the calling
// (locked) thread's.
func startPeer(t *testing.T, name string, port int) *peer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", peerEnv, name, port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{cmd: cmd, in: in, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	if line := p.line(t); line != "ready" {
		t.Fatalf("peer %s: %q", name, line)
	}
	return p
}

func (p *peer) line(t *testing.T) string {
	t.Helper()
	if !p.out.Scan() {
		t.Fatalf("peer ended: %v", p.out.Err())
	}
	return p.out.Text()
}

func (p *peer) dial(t *testing.T, addr string) string {
	t.Helper()
	fmt.Fprintf(p.in, "dial %s\n", addr)
	return p.line(t)
}

// The workload network in private network namespaces: the test's thread
// is the node, one peer the outside world, two peers workloads.
func TestNetworkGrantsOnlyWhatWasAsked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	runtime.LockOSThread() // this thread's namespace is the node's; it ends with the test
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	outside := startPeer(t, "outside", 8080)
	open := startPeer(t, "open", 9090)
	closed := startPeer(t, "closed", 9090)

	// The node's uplink: 192.0.2.1 here, 192.0.2.2 outside.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}))
	up0, err := netlink.LinkByName("up0")
	must(err)
	must(netlink.AddrAdd(up0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}}))
	must(netlink.LinkSetUp(up0))
	up1, err := netlink.LinkByName("up1")
	must(err)
	must(netlink.LinkSetNsPid(up1, outside.cmd.Process.Pid))
	ns, err := netns.GetFromPid(outside.cmd.Process.Pid)
	must(err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(err)
	defer h.Close()
	up1, err = h.LinkByName("up1")
	must(err)
	must(h.AddrAdd(up1, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 2), Mask: net.CIDRMask(24, 32)}}))
	must(h.LinkSetUp(up1))
	// Something on the node a workload must not reach.
	nodeSvc, err := net.Listen("tcp", ":7070")
	must(err)
	defer nodeSvc.Close()

	n := NewNetwork()
	detachOpen, err := n.Attach("open", open.cmd.Process.Pid, true, []uint32{9090})
	must(err)
	detachClosed, err := n.Attach("closed", closed.cmd.Process.Pid, false, nil)
	must(err)
	defer detachClosed()
	_, closedIP := addrs(2)
	openGW, _ := addrs(1)

	if got := open.dial(t, "192.0.2.2:8080"); got != "outside sees 192.0.2.1" {
		t.Errorf("outbound workload dialling out: %q, want a masqueraded connection", got)
	}
	if got := closed.dial(t, "192.0.2.2:8080"); got != "error" {
		t.Errorf("workload without outbound dialling out: %q, want no connection", got)
	}
	if got := outside.dial(t, "192.0.2.1:9090"); got != "open sees 192.0.2.2" {
		t.Errorf("published port from outside: %q", got)
	}
	if got := open.dial(t, net.JoinHostPort(closedIP.String(), "9090")); got != "error" {
		t.Errorf("workload to workload: %q, want no connection", got)
	}
	if got := open.dial(t, net.JoinHostPort(openGW.String(), "7070")); got != "error" {
		t.Errorf("workload to the node: %q, want no connection", got)
	}
	if _, err := n.Attach("other", closed.cmd.Process.Pid, false, []uint32{9090}); err == nil || !strings.Contains(err.Error(), "already published by workload open") {
		t.Errorf("second workload on port 9090: %v", err)
	}

	detachOpen()
	if _, err := netlink.LinkByName(hostIfname(1)); err == nil {
		t.Error("the workload's veth survived its detach")
	}
	if got := outside.dial(t, "192.0.2.1:9090"); got != "error" {
		t.Errorf("published port after the workload left: %q", got)
	}
}
