package reliability

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. Linux fixes it at 100
// on every architecture Go supports for the user-visible interface (proc(5), sysconf
// _SC_CLK_TCK), whatever the kernel's internal HZ; a reading is therefore exact to 10 ms.
const clockTicks = 100

// ProcStat is one reading of a process's resource use from /proc (Linux only).
type ProcStat struct {
	CPU     time.Duration // user + system CPU time of all threads so far (utime+stime)
	RSS     int64         // resident set size now, bytes (VmRSS)
	PeakRSS int64         // highest resident set size since start or since ResetPeakRSS, bytes (VmHWM)
}

// ReadProcStat reads pid's CPU time from /proc/PID/stat and its current and peak RSS from
// /proc/PID/status. It fails when the process does not exist or has exited (a zombie has no
// memory lines).
func ReadProcStat(pid int) (ProcStat, error) {
	var s ProcStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("procstat %d: %w", pid, err)
	}
	if s.CPU, err = parseStatCPU(b); err != nil {
		return s, fmt.Errorf("procstat %d: %w", pid, err)
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("procstat %d: %w", pid, err)
	}
	if s.RSS, s.PeakRSS, err = parseStatusMem(b); err != nil {
		return s, fmt.Errorf("procstat %d: %w", pid, err)
	}
	return s, nil
}

// ResetPeakRSS sets pid's VmHWM back to its current RSS (writes 5 to /proc/PID/clear_refs,
// Linux >= 4.0), so that PeakRSS measures the peak from now on. Only the process's owner may
// do it.
func ResetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("procstat reset peak rss %d: %w", pid, err)
	}
	return nil
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The second field (comm) is
// in parentheses and may itself hold spaces and parentheses, so the fields are counted from
// the last ')': after it come state (field 3), ..., utime (field 14), stime (field 15) [proc(5)].
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after comm")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after comm, want at least 13", len(f))
	}
	var ticks int64
	for _, field := range f[11:13] {
		n, err := strconv.ParseInt(string(field), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("stat: utime/stime %q is not a tick count", field)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}

// parseStatusMem returns VmRSS and VmHWM in bytes from the text of /proc/PID/status, where
// they read "VmRSS:\t    2028 kB".
func parseStatusMem(b []byte) (rss, hwm int64, err error) {
	var haveRSS, haveHWM bool
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst, haveRSS = &rss, true
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst, haveHWM = &hwm, true
		default:
			continue
		}
		f := bytes.Fields(line[6:])
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, 0, fmt.Errorf("status: malformed line %q", line)
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return 0, 0, fmt.Errorf("status: malformed line %q", line)
		}
		*dst = n << 10
	}
	if !haveRSS || !haveHWM {
		return 0, 0, errors.New("status: no VmRSS/VmHWM (process exited?)")
	}
	return rss, hwm, nil
}

// Usage is what a Sampler measured over its period.
type Usage struct {
	Wall    time.Duration // from StartSampler to the last successful reading
	CPU     time.Duration // CPU time the process used over Wall
	PeakRSS int64         // highest RSS seen over the period, bytes
	LastRSS int64         // RSS at the last successful reading, bytes
	Samples int           // successful readings, the first one included
	Err     error         // the first failed reading (e.g. the process exited); earlier figures stand
}

// CPUPercent is CPU over Wall: 100 means one core fully busy, 200 two.
func (u Usage) CPUPercent() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return 100 * u.CPU.Seconds() / u.Wall.Seconds()
}

// String formats the usage as "cpu=1.2s (60%) peak_rss=41.0MiB".
func (u Usage) String() string {
	return fmt.Sprintf("cpu=%s (%.0f%%) peak_rss=%.1fMiB", u.CPU.Round(10*time.Millisecond),
		u.CPUPercent(), float64(u.PeakRSS)/(1<<20))
}

// Sampler watches one process while it runs: CPU over an interval and peak RSS over a period.
// It reads /proc every interval on its own goroutine; Snapshot and Stop may be called from any
// goroutine. The peak is exact when the sampler could reset the process's VmHWM at start (its
// own children and itself: see ResetPeakRSS); otherwise it is the highest RSS sampled, which
// can miss a spike shorter than the interval.
type Sampler struct {
	pid   int
	start time.Time
	first ProcStat
	exact bool // VmHWM was reset at start, so it is the period's peak
	stop  chan struct{}
	once  sync.Once // closes stop
	done  chan struct{}

	mu sync.Mutex // guards u
	u  Usage
}

// StartSampler takes a first reading of pid and samples it every interval (at least 1 ms)
// until Stop. It fails when the first reading fails.
func StartSampler(pid int, interval time.Duration) (*Sampler, error) {
	interval = max(interval, time.Millisecond)
	exact := ResetPeakRSS(pid) == nil
	now := time.Now()
	first, err := ReadProcStat(pid)
	if err != nil {
		return nil, err
	}
	s := &Sampler{pid: pid, start: now, first: first, exact: exact,
		stop: make(chan struct{}), done: make(chan struct{})}
	s.u = Usage{PeakRSS: first.RSS, LastRSS: first.RSS, Samples: 1}
	if exact {
		s.u.PeakRSS = max(first.RSS, first.PeakRSS)
	}
	go s.loop(interval)
	return s, nil
}

func (s *Sampler) loop(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			s.sample()
			return
		case <-t.C:
			if !s.sample() {
				return
			}
		}
	}
}

// sample takes one reading into s.u and reports whether sampling should go on.
func (s *Sampler) sample() bool {
	now := time.Now()
	st, err := ReadProcStat(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.u.Err != nil {
		return false
	}
	if err != nil {
		s.u.Err = err
		return false
	}
	s.u.Wall = now.Sub(s.start)
	s.u.CPU = st.CPU - s.first.CPU
	s.u.LastRSS = st.RSS
	s.u.PeakRSS = max(s.u.PeakRSS, st.RSS)
	if s.exact {
		s.u.PeakRSS = max(s.u.PeakRSS, st.PeakRSS)
	}
	s.u.Samples++
	return true
}

// Snapshot returns the usage from the start to the latest reading, without stopping.
func (s *Sampler) Snapshot() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.u
}

// Stop takes a last reading, ends sampling and returns the usage over the whole period. It is
// safe to call more than once; later calls return the same figures.
func (s *Sampler) Stop() Usage {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.Snapshot()
}

// HostCPU is the machine's CPU time so far, summed over all cores, from the first line of
// /proc/stat: Busy is everything but idle and iowait.
type HostCPU struct {
	Busy, Total time.Duration
}

// ReadHostCPU reads the machine's CPU time from /proc/stat.
func ReadHostCPU() (HostCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return HostCPU{}, fmt.Errorf("procstat host cpu: %w", err)
	}
	h, err := parseHostCPU(b)
	if err != nil {
		return HostCPU{}, fmt.Errorf("procstat host cpu: %w", err)
	}
	return h, nil
}

// BusyPercentSince is the share of the machine's CPU time that was busy between before and h,
// in percent of all cores (100 = every core busy).
func (h HostCPU) BusyPercentSince(before HostCPU) float64 {
	total := h.Total - before.Total
	if total <= 0 {
		return 0
	}
	return 100 * float64(h.Busy-before.Busy) / float64(total)
}

// parseHostCPU reads the line "cpu  user nice system idle iowait irq softirq steal guest
// guest_nice" [proc(5)]; guest time is already counted in user and nice, so it is left out.
func parseHostCPU(b []byte) (HostCPU, error) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return HostCPU{}, fmt.Errorf("stat: first line %q is not the cpu total", line)
	}
	var h HostCPU
	for i, field := range f[1:min(len(f), 9)] { // user .. steal
		n, err := strconv.ParseInt(string(field), 10, 64)
		if err != nil || n < 0 {
			return HostCPU{}, fmt.Errorf("stat: cpu field %q is not a tick count", field)
		}
		d := time.Duration(n) * (time.Second / clockTicks)
		h.Total += d
		if i != 3 && i != 4 { // idle, iowait
			h.Busy += d
		}
	}
	return h, nil
}

// ListenerPID returns the pid of the process that holds a TCP socket listening on port, IPv4
// or IPv6: the socket's inode from /proc/net/tcp{,6}, then the process whose file descriptors
// include it. Reading other users' descriptors needs root or the same user.
func ListenerPID(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, ino := range parseListenInodes(b, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("procstat: no socket listening on port %d", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(link[len("socket:["):], "]")] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("procstat: the process listening on port %d is not readable", port)
}

// parseListenInodes returns the inodes of the sockets in LISTEN state (st 0A) on port, from
// the text of /proc/net/tcp or tcp6: "sl local_address rem_address st ... uid timeout inode".
func parseListenInodes(b []byte, port int) []string {
	var out []string
	suffix := fmt.Sprintf(":%04X", port)
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		f := bytes.Fields(line)
		if len(f) < 10 || string(f[3]) != "0A" || !bytes.HasSuffix(f[1], []byte(suffix)) {
			continue
		}
		out = append(out, string(f[9]))
	}
	return out
}
