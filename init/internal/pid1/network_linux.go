package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
)

// setupNetwork configures the network as n says: a static address or
// DHCP on the configured interface or the first with link.
func setupNetwork(ctx context.Context, n bootconfig.Network) error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	link, err := pickLink(n)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing up %s: %w", link.Attrs().Name, err)
	}
	if n.Mode == "static" {
		addr, err := netlink.ParseAddr(n.Address)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s: %w", n.Address, err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(n.Gateway)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding default route via %s: %w", n.Gateway, err)
		}
		writeResolvConf(n.DNS)
		say("network %s %s via %s", link.Attrs().Name, n.Address, n.Gateway)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.Timeout.D())
	defer cancel()
	for r := range dhclient.SendRequests(ctx, []netlink.Link{link}, true, false, dhclient.Config{Timeout: 5 * time.Second, Retries: 5}, n.Timeout.D()) {
		if r.Err != nil {
			return fmt.Errorf("DHCP on %s: %w", link.Attrs().Name, r.Err)
		}
		if err := r.Lease.Configure(); err != nil {
			return fmt.Errorf("applying DHCP lease: %w", err)
		}
		say("network %s %s (DHCP)", link.Attrs().Name, r.Lease)
		return nil
	}
	return errors.New("no DHCP answer")
}

func writeResolvConf(dns []string) {
	var b strings.Builder
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	_ = os.MkdirAll(filepath.Dir(layout.ResolvConf), 0o755)
	_ = os.WriteFile(layout.ResolvConf, []byte(b.String()), 0o644)
}

// pickLink returns the configured interface or the first non-loopback
// one with carrier, waiting up to the timeout for a link.
func pickLink(n bootconfig.Network) (netlink.Link, error) {
	if n.Interface != "" {
		return netlink.LinkByName(n.Interface)
	}
	deadline := time.Now().Add(n.Timeout.D())
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		var first netlink.Link
		for _, l := range links {
			if l.Type() != "device" || l.Attrs().Flags&net.FlagLoopback != 0 {
				continue
			}
			if first == nil {
				first = l
			}
			_ = netlink.LinkSetUp(l)
			if l.Attrs().OperState == netlink.OperUp {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			if first != nil {
				return first, nil
			}
			return nil, errors.New("no network interface")
		}
		time.Sleep(200 * time.Millisecond) // waiting for link, bounded by the timeout
	}
}
