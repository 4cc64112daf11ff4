package httpin

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
)

// The HTTP input's cost per event through a real listener and a real HTTP client.
//
// The client runs in a process of its own (this test binary started again with
// benchClientEnv set, see TestMain), so that the CPU time this process spends, read with
// getrusage(RUSAGE_SELF), is the input's alone: net/http's server, decoding, dispatch and the
// answer. The dispatcher settles every event at once, so no engine, rule or output is
// measured. Reported per event: ns/op (wall time, with benchClients requests in flight over
// kept-alive connections), cpu-µs/event (this process: the input) and client-cpu-µs/event
// (the client process, for reference).

const (
	benchClientEnv = "TURNOUT_HTTPIN_BENCH_CLIENT" // "url mode requests" makes the test binary a client
	benchClients   = 8                             // requests in flight
	benchBatchSize = 10                            // events per batched-mode request
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchClientEnv); spec != "" {
		if err := runBenchClient(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// ackDispatcher settles every message with nil before Dispatch returns (the input's channel
// for settlements is buffered, so this is allowed), counting the events.
type ackDispatcher struct {
	mu sync.Mutex
	n  int
}

func (d *ackDispatcher) Dispatch(_ context.Context, m *engine.Message, settle engine.SettleFunc) error {
	var err error
	if m.DecodeErr != nil {
		err = m.DecodeErr
	}
	d.mu.Lock()
	d.n++
	d.mu.Unlock()
	settle(err)
	return nil
}

func (d *ackDispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// benchEvent is event seq in the JSON format, about 300 bytes, shaped as the end-to-end
// benchmark's generator makes them.
func benchEvent(seq int) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":"bench-%d","source":"/reliability/generator","type":"care.alarm.fall","datacontenttype":"application/json","time":"2026-12-05T07:00:00.123456Z","site":"north","data":{"pad":"%s","seq":%d}}`,
		seq, strings.Repeat("x", 110), seq)
}

// benchRequest builds request seq of mode (binary, structured, batch).
func benchRequest(url, mode string, seq int) *http.Request {
	var body []byte
	h := http.Header{}
	switch mode {
	case "binary":
		body = fmt.Appendf(nil, `{"pad":"%s","seq":%d}`, strings.Repeat("x", 110), seq)
		h.Set("Content-Type", "application/json")
		h.Set("Ce-Specversion", "1.0")
		h.Set("Ce-Id", "bench-"+strconv.Itoa(seq))
		h.Set("Ce-Source", "/reliability/generator")
		h.Set("Ce-Type", "care.alarm.fall")
		h.Set("Ce-Time", "2026-12-05T07:00:00.123456Z")
		h.Set("Ce-Site", "north")
	case "structured":
		body = benchEvent(seq)
		h.Set("Content-Type", "application/cloudevents+json")
	case "batch":
		var b bytes.Buffer
		b.WriteByte('[')
		for i := range benchBatchSize {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(benchEvent(seq*benchBatchSize + i))
		}
		b.WriteByte(']')
		body = b.Bytes()
		h.Set("Content-Type", "application/cloudevents-batch+json")
	default:
		panic("unknown mode " + mode)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header = h
	return req
}

// runBenchClient is the client process: it warms its connections up, says "ready" on
// standard output, waits for a line on standard input, posts requests requests of mode from
// benchClients goroutines, and exits; any answer but 204 fails it.
func runBenchClient(spec string) error {
	var url, mode string
	var requests int
	if _, err := fmt.Sscan(spec, &url, &mode, &requests); err != nil {
		return fmt.Errorf("bench client spec %q: %w", spec, err)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: benchClients,
	}}
	post := func(seq int) error {
		resp, err := client.Do(benchRequest(url, mode, seq))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("request %d: %s: %s", seq, resp.Status, body)
		}
		return nil
	}
	run := func(first, n int) error {
		seqs := make(chan int)
		errs := make(chan error, benchClients)
		var wg sync.WaitGroup
		for range benchClients {
			wg.Go(func() {
				for seq := range seqs {
					if err := post(seq); err != nil {
						errs <- err
						for range seqs {
						}
						return
					}
				}
			})
		}
		for seq := first; seq < first+n; seq++ {
			seqs <- seq
		}
		close(seqs)
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	if err := run(-4*benchClients, 4*benchClients); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	return run(0, requests)
}

func cpuTime(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInput measures the HTTP input per event in binary, structured and batched mode
// (benchBatchSize events per request); see the comment at the top of this file.
// net-http-floor/{binary,structured} is the same client posting the same requests to a bare
// net/http server with the input's timeouts whose handler reads the body and answers 204: what
// net/http and the kernel cost before the input does anything. Run it with -count 3 or more on
// a shared machine and compare the medians of cpu-µs/event, and each with client-cpu-µs/event,
// which moves with the load.
func BenchmarkInput(b *testing.B) {
	for _, mode := range []string{"binary", "structured", "batch"} {
		b.Run(mode, func(b *testing.B) {
			in, err := New("bench", Config{Listen: "127.0.0.1:0", Path: "/events"}, engine.Deps{Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			d := &ackDispatcher{}
			if err := in.Start(context.Background(), d); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = in.Close(context.Background()) }()
			perRequest := 1
			if mode == "batch" {
				perRequest = benchBatchSize
			}
			benchClient(b, "http://"+in.Addr().String()+"/events", mode, perRequest, d.count)
		})
	}
	for _, mode := range []string{"binary", "structured"} {
		b.Run("net-http-floor/"+mode, func(b *testing.B) {
			c, err := Config{Listen: "127.0.0.1:0"}.withDefaults()
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", c.Listen)
			if err != nil {
				b.Fatal(err)
			}
			var mu sync.Mutex
			n := 0
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.ReadAll(r.Body)
					mu.Lock()
					n++
					mu.Unlock()
					w.WriteHeader(http.StatusNoContent)
				}),
				ReadHeaderTimeout: c.ReadTimeout,
				ReadTimeout:       c.ReadTimeout,
				WriteTimeout:      c.WriteTimeout,
				IdleTimeout:       2 * time.Minute,
			}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			benchClient(b, "http://"+ln.Addr().String()+"/", mode, 1, func() int {
				mu.Lock()
				defer mu.Unlock()
				return n
			})
		})
	}
}

// benchClient runs the client process against url until b.N events (perRequest per request)
// were taken, as count says, and reports the CPU times per event.
func benchClient(b *testing.B, url, mode string, perRequest int, count func() int) {
	requests := (b.N + perRequest - 1) / perRequest
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", benchClientEnv, url, mode, requests))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.Fatalf("bench client: %q, %v", line, err)
	}
	warm := count()
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	_, _ = io.WriteString(stdin, "go\n")
	err := cmd.Wait()
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if err != nil {
		b.Fatalf("bench client: %v", err)
	}
	events := count() - warm
	if events != requests*perRequest {
		b.Fatalf("%d events taken, want %d", events, requests*perRequest)
	}
	cpu := cpuTime(&after) - cpuTime(&before)
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-µs/event")
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		b.ReportMetric(float64(cpuTime(ru).Microseconds())/float64(events), "client-cpu-µs/event")
	}
}
