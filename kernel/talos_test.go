package kernel

import (
	"strings"
	"testing"

	"github.com/siderolabs/talos/pkg/machinery/imager/quirks"
	talos "github.com/siderolabs/talos/pkg/machinery/kernel"
)

// notTaken are the arguments of Talos's kernel command line that RigOS
// deliberately does not boot with, each with its reason. The test below
// keeps this table and Hardened honest against the Talos release go.mod
// pins: a new Talos argument fails it until it is taken or explained.
var notTaken = map[string]string{
	// Operational settings, not hardening.
	"consoleblank=0": "operational: keeps a local console from blanking; RigOS's console shows " +
		"status lines and nothing depends on it staying lit",
	"nvme_core.io_timeout=4294967295": "operational: AWS's advice for EBS volumes; RigOS runs on bare-metal " +
		"rigs with local NVMe, where the kernel's 30 s timeout is the right default",
	"printk.devkmsg=on": "operational, and the opposite of hardening: it lifts the rate limit on " +
		"userspace writes to /dev/kmsg; RigOS keeps the default (rate-limited)",
	// SELinux: RigOS ships no policy.
	"selinux=1": "RigOS loads no SELinux policy (SELinux without one confines nothing); workloads " +
		"are confined by runc namespaces, seccomp, cgroups and the agent's network policy",
}

// normalize makes a flag and the same flag with an empty value
// ("slab_nomerge" and Talos's "slab_nomerge=") compare equal.
func normalize(arg string) string { return strings.TrimSuffix(arg, "=") }

// Every hardening argument Talos boots with (its defaults for the latest
// release and its Secure Boot arguments) is on RigOS's command line or
// in notTaken with a reason; notTaken names nothing RigOS takes or
// Talos dropped.
func TestTalosArgsCrossCheck(t *testing.T) {
	q := quirks.New("") // no version: the latest Talos behaviour
	ours := map[string]bool{}
	for _, p := range Hardened {
		ours[normalize(p.Value)] = true
	}
	theirs := map[string]bool{}
	for _, a := range append(talos.DefaultArgs(q), talos.SecureBootArgs(q)...) {
		a = normalize(a)
		theirs[a] = true
		reason, skipped := notTaken[a]
		switch {
		case ours[a] && skipped:
			t.Errorf("%s is on the command line and in notTaken: drop it from notTaken", a)
		case !ours[a] && !skipped:
			t.Errorf("Talos boots with %s; RigOS neither does nor says why not: add it to Hardened or notTaken", a)
		case skipped && reason == "":
			t.Errorf("notTaken[%s] has no reason", a)
		}
	}
	for a := range notTaken {
		if !theirs[a] {
			t.Errorf("notTaken[%s]: Talos no longer boots with it: drop it", a)
		}
	}
}
