package workload

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A peer is this test binary re-executed in a network namespace of its
// own: it answers TCP connections on its ports with its name and the
// caller's address, on "dial ADDR" lines dials ADDR and prints what it
// got, and on "read PATH" lines prints the first line of file PATH (a
// sysctl of its namespace). IPv6 duplicate address detection is off in
// its namespace, so link-local addresses work at once (the strongest
// case for an attacker).
const peerEnv = "RIGOS_NETTEST_PEER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(peerEnv); spec != "" {
		runPeer(spec)
		return
	}
	os.Exit(m.Run())
}

func runPeer(spec string) {
	name, ports, _ := strings.Cut(spec, ":")
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0)
	for _, port := range strings.Split(ports, ",") {
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
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if path, ok := strings.CutPrefix(sc.Text(), "read "); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				fmt.Println("error")
				continue
			}
			first, _, _ := strings.Cut(string(b), "\n")
			fmt.Println(first)
			continue
		}
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

// startPeer starts a peer listening on ports in a new network namespace
// below the calling (locked) thread's.
func startPeer(t *testing.T, name string, ports ...int) *peer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	var ps []string
	for _, p := range ports {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%s", peerEnv, name, strings.Join(ps, ",")))
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

func (p *peer) read(t *testing.T, path string) string {
	t.Helper()
	fmt.Fprintf(p.in, "read %s\n", path)
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
	// Link-local addresses of this (the node's) namespace work at once.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0)
	outside := startPeer(t, "outside", 8080, 9090)
	open := startPeer(t, "open", 9090)
	closed := startPeer(t, "closed", 9090)
	third := startPeer(t, "third", 9191)

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
	go func() {
		for {
			c, err := nodeSvc.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "node sees %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()

	n := NewNetwork()
	detachOpen, err := n.Attach("open", open.cmd.Process.Pid, true, []uint32{9090})
	must(err)
	detachClosed, err := n.Attach("closed", closed.cmd.Process.Pid, false, nil)
	must(err)
	defer detachClosed()
	detachThird, err := n.Attach("third", third.cmd.Process.Pid, true, nil)
	must(err)
	defer detachThird()
	_, closedIP := addrs(2)
	openGW, _ := addrs(1)
	closedGW, _ := addrs(2)

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
	// Another workload dialling the published port is never redirected to
	// the publisher: not to some outside host's port 9090, not to the
	// node's uplink address, not to its own gateway.
	if got := closed.dial(t, "192.0.2.2:9090"); got != "error" {
		t.Errorf("workload without outbound dialling outside port 9090: %q, want no connection", got)
	}
	if got := third.dial(t, "192.0.2.2:9090"); got != "outside sees 192.0.2.1" {
		t.Errorf("outbound workload dialling outside port 9090: %q, want the outside host", got)
	}
	for _, addr := range []string{"192.0.2.1:9090", net.JoinHostPort(closedGW.String(), "9090")} {
		if got := closed.dial(t, addr); got != "error" {
			t.Errorf("workload dialling the node's %s: %q, want no connection", addr, got)
		}
	}
	// No IPv6 on workload links: not to the node, not to another workload.
	for _, l := range []string{hostIfname(1), hostIfname(2)} {
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + l + "/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) != "1" {
			t.Errorf("IPv6 on the node's end of %s: disable_ipv6 = %q, want 1", l, b)
		}
	}
	for _, p := range []*peer{open, closed} {
		if got := p.read(t, "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"); got != "1" && got != "error" {
			t.Errorf("IPv6 on the workload's eth0: disable_ipv6 = %q, want 1", got)
		}
	}
	if ll := linkLocal(t, hostIfname(1), netns.None()); ll != nil {
		if got := open.dial(t, fmt.Sprintf("[%s%%eth0]:7070", ll)); got != "error" {
			t.Errorf("workload to the node over IPv6 link-local %s: %q, want no connection", ll, got)
		}
	}
	closedNS, err := netns.GetFromPid(closed.cmd.Process.Pid)
	must(err)
	defer closedNS.Close()
	if ll := linkLocal(t, "eth0", closedNS); ll != nil {
		if got := open.dial(t, fmt.Sprintf("[%s%%eth0]:9090", ll)); got != "error" {
			t.Errorf("workload to workload over IPv6 link-local %s: %q, want no connection", ll, got)
		}
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

// linkLocal returns the IPv6 link-local address of link name in
// namespace ns (netns.None(): this thread's), waiting a while for one
// to come up unless IPv6 is disabled there; nil if it has none.
func linkLocal(t *testing.T, name string, ns netns.NsHandle) net.IP {
	t.Helper()
	var h *netlink.Handle
	var err error
	if ns == netns.None() {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		as, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return a.IP
			}
		}
		if len(as) == 0 && ipv6Disabled(t, name, ns) || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polling the kernel for an address, bounded by the deadline
	}
}

// ipv6Disabled reads link name's disable_ipv6 in namespace ns.
func ipv6Disabled(t *testing.T, name string, ns netns.NsHandle) bool {
	t.Helper()
	var b []byte
	read := func() error {
		var err error
		b, err = os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
		return err
	}
	var err error
	if ns == netns.None() {
		err = read()
	} else {
		err = inNetns(ns, read)
	}
	return err != nil || strings.TrimSpace(string(b)) == "1"
}
