// Command workload is the small container RigOS's tests and demo run on
// a node: a static program with a few modes.
//
//	hello           print a greeting and what the container sees, then exit
//	marker TEXT     write TEXT to /marker.txt and /scratch/marker.txt, sync,
//	                print "marker written", then run until killed
//	sleep           print a line every second until killed
//	eat MIB         allocate and touch MIB MiB of memory, then exit
//	fetch ADDR      connect to TCP ADDR and print the first line it sends
//	serve PORT      answer TCP connections on PORT until killed
//	gpu             print the NVIDIA device nodes and driver files the
//	                container sees, and whether it can write to them
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: workload hello|marker TEXT|sleep|eat MIB|fetch ADDR|serve PORT|gpu")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hello":
		host, _ := os.Hostname()
		fmt.Printf("hello from a RigOS workload: pid %d, hostname %s, %d CPUs visible\n", os.Getpid(), host, runtime.NumCPU())
		if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
			fmt.Printf("memory.max %s", b)
		}
		if b, err := os.ReadFile("/proc/self/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Seccomp:") || strings.HasPrefix(l, "NoNewPrivs:") {
					fmt.Println(strings.Join(strings.Fields(l), " "))
				}
			}
		}
		// Which node IDs this process's IDs are (its user namespace).
		if b, err := os.ReadFile("/proc/self/uid_map"); err == nil {
			fmt.Println("uid_map", strings.Join(strings.Fields(string(b)), " "))
		}
	case "marker":
		text := []byte(os.Args[2] + "\n")
		for _, p := range []string{"/marker.txt", "/scratch/marker.txt"} {
			if err := os.WriteFile(p, text, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		syscall.Sync()
		fmt.Println("marker written")
		for {
			time.Sleep(time.Second)
		}
	case "sleep":
		for i := 0; ; i++ {
			fmt.Printf("tick %d\n", i)
			time.Sleep(time.Second)
		}
	case "eat":
		n, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
			if i%16 == 0 {
				fmt.Printf("allocated %d MiB\n", i)
			}
		}
		fmt.Printf("allocated %d MiB, done\n", len(keep))
	case "fetch":
		c, err := net.DialTimeout("tcp", os.Args[2], 5*time.Second)
		if err != nil {
			fmt.Println("fetch error:", err)
			os.Exit(1)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("fetch error:", err)
			os.Exit(1)
		}
		fmt.Print("fetched: ", line)
	case "serve":
		l, err := net.Listen("tcp", ":"+os.Args[2])
		if err != nil {
			fmt.Println("serve error:", err)
			os.Exit(1)
		}
		fmt.Println("serving on port", os.Args[2])
		host, _ := os.Hostname()
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			fmt.Fprintf(c, "workload %s answers\n", host)
			c.Close()
		}
	case "gpu":
		gpu()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

// gpu prints one line per NVIDIA device node in /dev ("gpu dev NAME
// char MAJOR:MINOR"), then, for the driver's files a CUDA container
// needs, whether each is there, an ELF file, and writable ("gpu file
// PATH elf=true writable=false").
func gpu() {
	nodes, _ := filepath.Glob("/dev/nvidia*")
	for _, n := range nodes {
		var st syscall.Stat_t
		if err := syscall.Stat(n, &st); err != nil {
			fmt.Printf("gpu dev %s error %v\n", filepath.Base(n), err)
			continue
		}
		kind := "other"
		if st.Mode&syscall.S_IFMT == syscall.S_IFCHR {
			kind = "char"
		}
		fmt.Printf("gpu dev %s %s %d:%d\n", filepath.Base(n), kind, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
		"/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1", "/usr/bin/nvidia-smi"} {
		b := make([]byte, 4)
		f, err := os.Open(p)
		if err != nil {
			fmt.Printf("gpu file %s missing: %v\n", p, err)
			continue
		}
		_, err = io.ReadFull(f, b)
		f.Close()
		w, werr := os.OpenFile(p, os.O_WRONLY, 0)
		if werr == nil {
			w.Close()
		}
		fmt.Printf("gpu file %s elf=%t writable=%t\n", p, err == nil && string(b) == "\x7fELF", werr == nil)
	}
}
