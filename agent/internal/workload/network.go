package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network gives workloads that ask for it outbound access and incoming
// ports. Each such workload gets a veth pair routed as its own /30 out
// of 10.88.0.0/16 (no shared layer 2, so workloads cannot reach one
// another), and nftables (table "ip rigos") forwards and masquerades
// only what each workload was granted:
//
//   - outbound: new connections from the workload to anything outside
//     10.88.0.0/16, masqueraded behind the node's address;
//   - ports: TCP connections arriving from outside (not from a workload's
//     link, not from 10.88.0.0/16) for one of the node's own addresses
//     at port P are forwarded to the same port of the workload; another
//     workload dialling port P anywhere is never redirected to it;
//   - nothing from a workload to the node itself.
//
// Workload links carry no IPv6: it is disabled on both ends of each veth
// (and in the workload's namespace as a whole), and table "ip6 rigos"
// drops any IPv6 from or to a workload link should it come up anyway.
//
// Workloads without network flags keep an empty network namespace.
type Network struct {
	mu    sync.Mutex
	slots map[int]*netSlot // by index
	// nft is the ruleset's netlink connection; tests give one bound to a
	// network namespace of their own.
	nft func() (*nftables.Conn, error)
}

type netSlot struct {
	id       string
	outbound bool
	ports    []uint32
}

// Subnet is the workloads' address range.
var Subnet = net.IPNet{IP: net.IPv4(10, 88, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}

const maxSlots = 1<<14 - 1 // /30s in Subnet, index 0 unused

// NewNetwork returns the node's workload network.
func NewNetwork() *Network {
	return &Network{slots: map[int]*netSlot{}, nft: func() (*nftables.Conn, error) { return nftables.New() }}
}

// addrs returns the host and workload addresses of slot index.
func addrs(index int) (host, workload net.IP) {
	base := binary.BigEndian.Uint32(Subnet.IP) + uint32(4*index)
	host, workload = make(net.IP, 4), make(net.IP, 4)
	binary.BigEndian.PutUint32(host, base+1)
	binary.BigEndian.PutUint32(workload, base+2)
	return host, workload
}

// hostIfPrefix starts the name of every workload link's host end.
const hostIfPrefix = "rig"

func hostIfname(index int) string { return fmt.Sprintf("%s%d", hostIfPrefix, index) }

// reserve takes a slot for a workload, checking its ports are free.
func (n *Network) reserve(id string, outbound bool, ports []uint32) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range ports {
		if p < apiv1.MinPort || p > apiv1.MaxPort {
			return 0, fmt.Errorf("network: port %d out of range: want %d-%d", p, apiv1.MinPort, apiv1.MaxPort)
		}
		for _, s := range n.slots {
			if slices.Contains(s.ports, p) {
				return 0, fmt.Errorf("network: port %d is already published by workload %s", p, s.id)
			}
		}
	}
	for i := 1; i <= maxSlots; i++ {
		if _, used := n.slots[i]; !used {
			n.slots[i] = &netSlot{id: id, outbound: outbound, ports: slices.Clone(ports)}
			return i, nil
		}
	}
	return 0, errors.New("network: no free addresses for workloads")
}

func (n *Network) release(index int) {
	n.mu.Lock()
	delete(n.slots, index)
	n.mu.Unlock()
}

// Attach connects the network namespace of process pid (the workload's
// init, created but not started) as granted, and returns a function
// that disconnects it.
func (n *Network) Attach(id string, pid int, outbound bool, ports []uint32) (func(), error) {
	index, err := n.reserve(id, outbound, ports)
	if err != nil {
		return nil, err
	}
	detach := func() {
		if l, err := netlink.LinkByName(hostIfname(index)); err == nil {
			_ = netlink.LinkDel(l) // takes the workload's end with it
		}
		n.release(index)
		_ = n.apply()
	}
	if err := n.connect(index, pid); err != nil {
		detach()
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := n.apply(); err != nil {
		detach()
		return nil, fmt.Errorf("network: firewall: %w", err)
	}
	return detach, nil
}

func (n *Network) connect(index, pid int) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("enabling forwarding: %w", err)
	}
	host, wl := addrs(index)
	mask := net.CIDRMask(30, 32)
	name, peer := hostIfname(index), fmt.Sprintf("rigp%d", index)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		return fmt.Errorf("creating veth %s: %w", name, err)
	}
	hl, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: &net.IPNet{IP: host, Mask: mask}}); err != nil {
		return fmt.Errorf("addressing %s: %w", name, err)
	}
	if err := disableIPv6("/proc/sys", name); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return err
	}
	pl, err := netlink.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsPid(pl, pid); err != nil {
		return fmt.Errorf("moving %s into the workload: %w", peer, err)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("workload network namespace: %w", err)
	}
	defer ns.Close()
	// Route netlink only: the other families (XFRM) may be modules this
	// kernel never loaded.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in the workload's namespace: %w", err)
	}
	defer h.Close()
	wlLink, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(wlLink, "eth0"); err != nil {
		return err
	}
	// Moving a link resets its IPv6 settings to the namespace's defaults:
	// disable IPv6 there for every link (lo and eth0 included).
	if err := inNetns(ns, func() error { return disableIPv6("/proc/sys", "all", "default", "lo", "eth0") }); err != nil {
		return fmt.Errorf("workload namespace: %w", err)
	}
	if err := h.AddrAdd(wlLink, &netlink.Addr{IPNet: &net.IPNet{IP: wl, Mask: mask}}); err != nil {
		return fmt.Errorf("addressing the workload: %w", err)
	}
	if err := h.LinkSetUp(wlLink); err != nil {
		return err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: wlLink.Attrs().Index, Gw: host}); err != nil {
		return fmt.Errorf("workload default route: %w", err)
	}
	return nil
}

// disableIPv6 turns IPv6 off on the links named (or "all", "default")
// of the network namespace that sysctl (normally /proc/sys) was opened
// in. A kernel without IPv6 has nothing to turn off.
func disableIPv6(sysctl string, links ...string) error {
	if _, err := os.Stat(filepath.Join(sysctl, "net/ipv6")); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, l := range links {
		p := filepath.Join(sysctl, "net/ipv6/conf", l, "disable_ipv6")
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			return fmt.Errorf("disabling IPv6 on %s: %w", l, err)
		}
	}
	return nil
}

// inNetns runs f on a thread of its own inside network namespace ns.
// The thread is never unlocked, so it ends with the goroutine and no
// other goroutine ever runs in ns.
func inNetns(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering the namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// apply replaces the "ip rigos" table with the rules for the workloads
// attached now, in one netlink transaction.
func (n *Network) apply() error {
	n.mu.Lock()
	rules := n.rules()
	n.mu.Unlock()
	c, err := n.nft()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == "rigos" {
			c.DelTable(t)
		}
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "rigos"})
	drop, accept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		"forward": c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop}),
		"input": c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}),
		"prerouting": c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}),
		"postrouting": c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}),
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.chain], Exprs: r.exprs})
	}
	if err := replaceIPv6Table(c); err != nil {
		return err
	}
	return c.Flush()
}

// replaceIPv6Table (re)adds table "ip6 rigos", which drops IPv6 from a
// workload link to the node and any IPv6 forwarded from or to one.
// IPv6 is disabled on those links; this holds should it come back.
func replaceIPv6Table(c *nftables.Conn) error {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == "rigos" {
			c.DelTable(t)
		}
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: "rigos"})
	accept := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: concat(ifnamePrefix(expr.MetaKeyIIFNAME, true), drop())})
	c.AddRule(&nftables.Rule{Table: t, Chain: forward, Exprs: concat(ifnamePrefix(expr.MetaKeyIIFNAME, true), drop())})
	c.AddRule(&nftables.Rule{Table: t, Chain: forward, Exprs: concat(ifnamePrefix(expr.MetaKeyOIFNAME, true), drop())})
	return nil
}

type rule struct {
	chain string
	exprs []expr.Any
}

// rules are the table's rules for the current slots.
func (n *Network) rules() []rule {
	out := []rule{
		// Replies and related traffic of allowed connections.
		{"forward", concat(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())},
		// Connections forwarded to published ports.
		{"forward", concat(ctStatusIs(ipsDstNAT), accept())},
		// Workloads leave for outside 10.88.0.0/16 behind the node's address.
		{"postrouting", concat(ipInSubnet(12, true), ipInSubnet(16, false), []expr.Any{&expr.Masq{}})},
	}
	indexes := make([]int, 0, len(n.slots))
	for i := range n.slots {
		indexes = append(indexes, i)
	}
	slices.Sort(indexes)
	for _, i := range indexes {
		s := n.slots[i]
		ifname := hostIfname(i)
		// Nothing from a workload to the node itself.
		out = append(out, rule{"input", concat(ifnameIs(expr.MetaKeyIIFNAME, ifname), drop())})
		if s.outbound {
			out = append(out, rule{"forward", concat(ifnameIs(expr.MetaKeyIIFNAME, ifname), ipInSubnet(16, false), accept())})
		}
		_, wl := addrs(i)
		for _, p := range s.ports {
			port := binary.BigEndian.AppendUint16(nil, uint16(p))
			out = append(out, rule{"prerouting", concat(
				// Only from outside: not from a workload's link nor
				// from a workload address, and only for the node's own
				// addresses (a workload dialling port P of some other
				// host is not redirected here).
				ifnamePrefix(expr.MetaKeyIIFNAME, false),
				ipInSubnet(12, false),
				daddrIsLocal(),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
					&expr.Immediate{Register: 1, Data: wl.To4()},
					&expr.Immediate{Register: 2, Data: port},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
				})})
		}
	}
	return out
}

// ipsDstNAT is IPS_DST_NAT in the conntrack status bits.
const ipsDstNAT = 1 << 5

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }

func ifnameIs(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// ifnamePrefix matches the interface name starting (in) or not with
// the workloads' host link prefix "rig" (rig<n>, nft's "rig*").
func ifnamePrefix(key expr.MetaKey, in bool) []expr.Any {
	op := expr.CmpOpEq
	if !in {
		op = expr.CmpOpNeq
	}
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(hostIfPrefix)}}
}

// daddrIsLocal matches a destination address that is one of the node's
// own (nft's "fib daddr type local").
func daddrIsLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
	}
}

// ipInSubnet matches the source (offset 12) or destination (16) address
// being in Subnet (in) or outside it.
func ipInSubnet(offset uint32, in bool) []expr.Any {
	op := expr.CmpOpEq
	if !in {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: Subnet.Mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: Subnet.IP.To4()},
	}
}

func ctStateIs(bits uint32) []expr.Any  { return ctBits(expr.CtKeySTATE, bits) }
func ctStatusIs(bits uint32) []expr.Any { return ctBits(expr.CtKeySTATUS, bits) }

func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	mask := binary.NativeEndian.AppendUint32(nil, bits)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}
