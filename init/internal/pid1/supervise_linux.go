package pid1

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rigos/rigos/pkg/layout"
)

// serviceEnv is the environment of the services init starts.
func serviceEnv() []string {
	return []string{"PATH=" + layout.SystemPath, "HOME=" + layout.RunDir}
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// reaper collects every child that exits (orphans are reparented to PID
// 1) and reports the exits of processes it was asked to watch.
type reaper struct {
	mu      sync.Mutex
	watched map[int]chan unix.WaitStatus
}

func startReaper() *reaper {
	r := &reaper{watched: map[int]chan unix.WaitStatus{}}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, unix.SIGCHLD)
	go func() {
		for range sig {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err != nil || pid <= 0 {
					break
				}
				r.mu.Lock()
				ch, ok := r.watched[pid]
				delete(r.watched, pid)
				r.mu.Unlock()
				if ok {
					ch <- ws
				}
			}
		}
	}()
	return r
}

// start starts argv and returns a channel that receives its exit status.
func (r *reaper) start(argv, env []string, cgroup string) (int, chan unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	attr := &syscall.SysProcAttr{}
	if cgroup != "" {
		// Started inside its cgroup (clone3), so no thread ever runs
		// outside it.
		fd, err := unix.Open(cgroup, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, nil, fmt.Errorf("opening cgroup %s: %w", cgroup, err)
		}
		defer unix.Close(fd)
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}
	r.mu.Lock()
	defer r.mu.Unlock() // held so the reaper cannot see the exit before it is watched
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{nil, os.Stdout, os.Stderr},
		Sys:   attr,
	})
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	r.watched[pid] = ch
	_ = p.Release()
	return pid, ch, nil
}

// supervise runs a service in cgroup (a folder under /sys/fs/cgroup;
// empty: init's own), restarting it with backoff, until it exits with
// status stopOn (0: never), when supervise returns.
func supervise(name string, argv, env []string, cgroup string, r *reaper, stopOn int) {
	b := newBackoff()
	for {
		started := time.Now()
		pid, done, err := r.start(argv, env, cgroup)
		if err != nil {
			say("starting %s: %v", name, err)
		} else {
			say("%s started (pid %d)", name, pid)
			ws := <-done
			say("%s exited (%s)", name, describe(ws))
			if stopOn != 0 && ws.Exited() && ws.ExitStatus() == stopOn {
				return
			}
		}
		if time.Since(started) > time.Minute {
			b.reset()
		}
		d := b.next()
		say("restarting %s in %s", name, d)
		time.Sleep(d)
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
