package reliability

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	const tail = " S 1 1 1 0 -1 4194304 99 0 0 0 250 75 0 0 20 0 1 0 29870 3133440 412 18446744073709551615 0"
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain", stat: "9015 (turnout)" + tail, want: 3250 * time.Millisecond},
		{name: "comm with spaces and parens", stat: "9015 (a) b (c))" + tail, want: 3250 * time.Millisecond},
		{name: "no comm", stat: "9015 turnout" + tail, wantErr: true},
		{name: "truncated", stat: "9015 (turnout) S 1 1 1 0 -1 4194304 99 0 0 0 250", wantErr: true},
		{name: "not a number", stat: "9015 (turnout) S 1 1 1 0 -1 4194304 99 0 0 0 x 75", wantErr: true},
		{name: "negative", stat: "9015 (turnout) S 1 1 1 0 -1 4194304 99 0 0 0 -1 75", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("cpu = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatusMem(t *testing.T) {
	tests := []struct {
		name     string
		status   string
		rss, hwm int64
		wantErr  bool
	}{
		{name: "running", status: "Name:\tturnout\nVmPeak:\t 9000 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2028 kB\nThreads:\t1\n",
			rss: 2028 << 10, hwm: 4096 << 10},
		{name: "zombie has no memory lines", status: "Name:\tturnout\nState:\tZ (zombie)\n", wantErr: true},
		{name: "unit missing", status: "VmHWM:\t4096\nVmRSS:\t2028 kB\n", wantErr: true},
		{name: "not a number", status: "VmHWM:\tx kB\nVmRSS:\t2028 kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rss, hwm, err := parseStatusMem([]byte(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if rss != tt.rss || hwm != tt.hwm {
				t.Fatalf("rss, hwm = %d, %d, want %d, %d", rss, hwm, tt.rss, tt.hwm)
			}
		})
	}
}

func FuzzParseProc(f *testing.F) {
	f.Add([]byte("9015 (a) b) S 1 1 1 0 -1 4194304 99 0 0 0 250 75 0"))
	f.Add([]byte("VmHWM:\t    4096 kB\nVmRSS:\t    2028 kB\n"))
	f.Add([]byte("cpu  100 5 50 800 20 3 2 1 40 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cpu, err := parseStatCPU(b); err == nil && cpu < 0 {
			t.Fatalf("negative cpu %v from %q", cpu, b)
		}
		if rss, hwm, err := parseStatusMem(b); err == nil && (rss < 0 || hwm < 0) {
			t.Fatalf("negative memory %d, %d from %q", rss, hwm, b)
		}
		if h, err := parseHostCPU(b); err == nil && (h.Busy < 0 || h.Busy > h.Total) {
			t.Fatalf("host cpu %+v from %q", h, b)
		}
	})
}

// burnCPU spins until the process's CPU time has grown by at least d (or a minute passed,
// whatever the machine's load), and returns the reading before.
func burnCPU(t *testing.T, d time.Duration) ProcStat {
	t.Helper()
	before, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		now, err := ReadProcStat(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now.CPU-before.CPU >= d {
			break
		}
	}
	runtime.KeepAlive(x)
	return before
}

// touch allocates n bytes and writes every page, so that they count in RSS.
func touch(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	return b
}

func TestReadProcStatSelf(t *testing.T) {
	before := burnCPU(t, 50*time.Millisecond)
	b := touch(64 << 20)
	after, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(b)
	if got := after.CPU - before.CPU; got < 50*time.Millisecond {
		t.Errorf("CPU grew by %v after spinning, want >= 50ms", got)
	}
	if after.RSS < before.RSS+48<<20 {
		t.Errorf("RSS %d after touching 64 MiB, was %d: want >= +48 MiB", after.RSS, before.RSS)
	}
	if after.PeakRSS < after.RSS {
		t.Errorf("peak RSS %d below current RSS %d", after.PeakRSS, after.RSS)
	}
	t.Logf("self: before %+v, after %+v", before, after)
}

func TestSampler(t *testing.T) {
	t.Run("self", func(t *testing.T) {
		base, err := ReadProcStat(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		s, err := StartSampler(os.Getpid(), 5*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		b := touch(64 << 20)
		runtime.KeepAlive(b)
		b = nil
		runtime.GC()
		burnCPU(t, 50*time.Millisecond)
		mid := s.Snapshot()
		u := s.Stop()
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		if u.PeakRSS < base.RSS+48<<20 {
			t.Errorf("peak RSS %d, want >= %d (start RSS + 48 MiB)", u.PeakRSS, base.RSS+48<<20)
		}
		if u.CPU < 50*time.Millisecond || u.CPU < mid.CPU {
			t.Errorf("CPU %v (snapshot %v), want >= 50ms and >= snapshot", u.CPU, mid.CPU)
		}
		if u.Samples < 2 || u.Wall <= 0 || u.CPUPercent() <= 0 {
			t.Errorf("usage %+v: want >= 2 samples, positive wall time and CPU%%", u)
		}
		if again := s.Stop(); again != u {
			t.Errorf("second Stop = %+v, want %+v", again, u)
		}
		t.Logf("self: %s over %v, %d samples", u, u.Wall.Round(time.Millisecond), u.Samples)
	})
	t.Run("process exits", func(t *testing.T) {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Skipf("cannot start sleep: %v", err)
		}
		s, err := StartSampler(cmd.Process.Pid, 5*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		time.Sleep(30 * time.Millisecond)
		u := s.Stop()
		if u.Err == nil {
			t.Errorf("usage %+v: want the error of reading an exited process", u)
		}
		if u.Samples < 1 || u.PeakRSS <= 0 {
			t.Errorf("usage %+v: want the figures from before the exit", u)
		}
	})
	t.Run("no such process", func(t *testing.T) {
		if _, err := StartSampler(1<<30, time.Millisecond); err == nil {
			t.Fatal("StartSampler on a pid that cannot exist: want an error")
		}
	})
}

func TestParseHostCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    HostCPU
		wantErr bool
	}{
		{name: "linux", stat: "cpu  100 5 50 800 20 3 2 1 40 0\ncpu0 50 2 25 400 10 1 1 0 20 0\n",
			want: HostCPU{Busy: 1610 * time.Millisecond, Total: 9810 * time.Millisecond}},
		{name: "old kernel, four fields", stat: "cpu 100 0 50 850\n",
			want: HostCPU{Busy: 1500 * time.Millisecond, Total: 10 * time.Second}},
		{name: "not the total", stat: "cpu0 100 0 50 850\n", wantErr: true},
		{name: "not a number", stat: "cpu 100 x 50 850\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHostCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	before, err := ReadHostCPU()
	if err != nil {
		t.Fatal(err)
	}
	burnCPU(t, 50*time.Millisecond)
	after, err := ReadHostCPU()
	if err != nil {
		t.Fatal(err)
	}
	if p := after.BusyPercentSince(before); p <= 0 || p > 100 {
		t.Errorf("host busy %.1f%% while this test spun, want in (0, 100]", p)
	}
}

func TestListenerPID(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 5991 1 0000 100 0 0 10 0
   1: 0100007F:1628 0100007F:D431 01 00000000:00000000 00:00000000 00000000   106        0 7777 1 0000 100 0 0 10 0
   2: 0100007F:1629 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 8888 1 0000 100 0 0 10 0
`
	if got := parseListenInodes([]byte(tcp), 5672); !slices.Equal(got, []string{"5991"}) {
		t.Errorf("listening inodes on 5672 = %v, want [5991] (not the established connection, not port 5673)", got)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid, err := ListenerPID(l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("ListenerPID = %d, want this process %d", pid, os.Getpid())
	}
	if _, err := ListenerPID(1); err == nil {
		t.Error("ListenerPID(1): want an error, nothing listens there")
	}
}
