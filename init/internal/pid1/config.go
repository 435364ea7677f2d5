// Package pid1 is RigOS's init: the Go program the kernel starts as PID 1
// from the initramfs. It mounts the kernel file systems, loads the
// allowlisted modules and then disables module loading, applies the
// hardening sysctls, records boot phases in the TPM, brings up the
// network, starts and supervises the agent, reaps orphans, and reboots
// when something it cannot recover from happens. It starts nothing else:
// there is no shell, getty or login anywhere in the image.
//
// The boot is a table of named steps (bootSteps), some of which end in a
// measured boot phase; the files init reads and writes are named in
// pkg/layout, and the devices it looks for are read from a sysfs tree
// (sysfs, /sys on a booted system) that tests build in a folder.
package pid1

// Sysctls are the hardening settings init applies, in order.
var Sysctls = []struct{ Key, Value, Reason string }{
	{"kernel.kptr_restrict", "2", "hide kernel pointers"},
	{"kernel.dmesg_restrict", "1", "kernel log for CAP_SYSLOG only"},
	{"kernel.unprivileged_bpf_disabled", "1", "no BPF for unprivileged users (cannot be undone)"},
	{"net.core.bpf_jit_harden", "2", "constant blinding in the BPF JIT"},
	{"kernel.kexec_load_disabled", "1", "no kexec into another kernel (cannot be undone)"},
	{"kernel.perf_event_paranoid", "3", "no perf events for unprivileged users"},
	// 2, not 3: containerd makes the idmapped mounts of user-namespaced
	// workloads through a child that calls PTRACE_TRACEME under a root
	// parent, which scope 3 refuses. Workloads hold no CAP_SYS_PTRACE.
	{"kernel.yama.ptrace_scope", "2", "ptrace only with CAP_SYS_PTRACE (root on the node)"},
	{"kernel.sysrq", "0", "no magic SysRq"},
	{"kernel.core_pattern", "|/bin/false", "no core dumps written anywhere"},
	{"fs.suid_dumpable", "0", "no core dumps of privileged processes"},
	{"fs.protected_symlinks", "1", "symlink races in shared folders"},
	{"fs.protected_hardlinks", "1", "hardlink races in shared folders"},
	{"fs.protected_fifos", "2", "FIFO races in shared folders"},
	{"fs.protected_regular", "2", "file races in shared folders"},
	{"kernel.unprivileged_userns_clone", "0", "no user namespaces for unprivileged users"},
	{"net.ipv4.conf.all.rp_filter", "1", "drop spoofed source addresses"},
	{"net.ipv4.conf.all.accept_redirects", "0", "ignore ICMP redirects"},
	{"net.ipv6.conf.all.accept_redirects", "0", "ignore ICMPv6 redirects"},
}
