package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/admin/admintest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// startAdmin starts an admin server on a real port with opts (Rules, Gatherer, Logger and
// Listen filled in), logging to the returned buffer.
func startAdmin(t *testing.T, fake *admintest.Fake, opts admin.Options) (*admin.Server, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	opts.Listen = "127.0.0.1:0"
	opts.Rules = fake
	opts.Gatherer = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := admin.New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, logs
}

// clientFrom is an HTTP client whose connections come from the local address ip (any
// 127.0.0.0/8 address reaches a listener on 127.0.0.1 on Linux).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// send is call with a client of one's own, returning the whole answer.
func send(t *testing.T, c *http.Client, method, url, tok string, body []byte) *http.Response {
	t.Helper()
	resp, _ := do(t, c, method, url, tok, body)
	return resp
}

// TestAuthFailureLimit: after AuthFailureBurst wrong tokens from one address, its requests get
// 429 with Retry-After without their token being checked (the right one included), reads and
// writes alike, until the window gives a try back; another address is not affected.
func TestAuthFailureLimit(t *testing.T) {
	fake := admintest.New("care")
	s, logs := startAdmin(t, fake, admin.Options{Token: []byte(token), AuthFailureBurst: 3, AuthFailureWindow: 3 * time.Second})
	base := "http://" + s.Addr()
	attacker, other := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	for i := range 3 {
		if resp := send(t, attacker, "POST", base+"/rules/versions", "wrong-token-"+strings.Repeat("x", i), admintest.Wasm("a")); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d = %d, want 401", i+1, resp.StatusCode)
		}
	}
	for _, r := range []struct{ method, path, tok string }{
		{"POST", "/rules/versions", token}, {"GET", "/rules", token}, {"DELETE", "/rules/versions/abc", "wrong"},
	} {
		resp := send(t, attacker, r.method, base+r.path, r.tok, admintest.Wasm("a"))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("%s %s after 3 failures = %d Retry-After %q, want 429 with Retry-After 1", r.method, r.path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if l, _ := fake.List(context.Background()); len(l.Versions) != 0 {
		t.Errorf("%d versions stored by refused requests", len(l.Versions))
	}
	if resp := send(t, other, "GET", base+"/rules", token, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("another address with the right token = %d, want 200", resp.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond) // one try comes back every window/burst = 1s
	if resp := send(t, attacker, "POST", base+"/rules/versions", token, admintest.Wasm("a")); resp.StatusCode != http.StatusCreated {
		t.Errorf("right token once a try came back = %d, want 201", resp.StatusCode)
	}
	log := logs.String()
	for _, want := range []string{
		`level=WARN msg="admin write refused" remote=127.0.0.1:`,
		`method=POST path=/rules/versions status=429 code=too_many_attempts`,
		`level=WARN msg="admin read refused" remote=127.0.0.1:`,
		`method=GET path=/rules status=429`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
}

// TestAuditRefusedWrites: every refused write is logged at warn level with the remote address,
// method, path, status and reason; accepted writes and reads are not.
func TestAuditRefusedWrites(t *testing.T) {
	s, logs := startAdmin(t, admintest.New("care"), admin.Options{Token: []byte(token), MaxUploadBytes: 1024})
	base := "http://" + s.Addr()
	c := http.DefaultClient
	for _, tc := range []struct {
		method, path, tok string
		body              []byte
		want              string
	}{
		{"POST", "/rules/versions", "", admintest.Wasm("a"), `method=POST path=/rules/versions status=401 code=unauthorized reason="missing or wrong bearer token`},
		{"POST", "/rules/versions?route=care", token, []byte("fail:compile"), `method=POST path=/rules/versions status=422 code=compile reason=`},
		{"POST", "/rules/versions", token, bytes.Repeat([]byte("x"), 2048), `method=POST path=/rules/versions status=413 code=too_large reason="the upload is larger than the limit of 1024 bytes`},
		{"POST", "/rules/versions?config=%7Bnope", token, admintest.Wasm("b"), `status=400 code=bad_request reason="config is not valid JSON" who=token-holder uploaded_by="" route=""`},
		{"DELETE", "/rules/versions/abc", token, nil, `method=DELETE path=/rules/versions/abc status=404 code=version_not_found`},
		{"POST", "/rules/routes/care/activate", token, []byte(`{}`), `method=POST path=/rules/routes/care/activate status=400 code=bad_request`},
		{"POST", "/rules/routes/care/rollback", token, nil, `method=POST path=/rules/routes/care/rollback status=409 code=no_previous_version`},
	} {
		before := strings.Count(logs.String(), "\n")
		resp := send(t, c, tc.method, base+tc.path, tc.tok, tc.body)
		if resp.StatusCode < 400 {
			t.Fatalf("%s %s = %d, want a refusal", tc.method, tc.path, resp.StatusCode)
		}
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")[before:]
		if len(lines) != 1 || !strings.Contains(lines[0], `level=WARN msg="admin write refused" remote=127.0.0.1:`) || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%s %s = %d logged %q, want one warn line with %q", tc.method, tc.path, resp.StatusCode, lines, tc.want)
		}
	}
	before := logs.String()
	if resp := send(t, c, "POST", base+"/rules/versions", token, admintest.Wasm("ok")); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload = %d, want 201", resp.StatusCode)
	}
	if resp := send(t, c, "GET", base+"/rules/versions/nope", token, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("show of an unknown version = %d, want 404", resp.StatusCode)
	}
	if added := strings.TrimPrefix(logs.String(), before); strings.Contains(added, "refused") {
		t.Errorf("an accepted write or a read answered 404 logged a refusal:\n%s", added)
	}

	ro, roLogs := startAdmin(t, admintest.New("care"), admin.Options{})
	if resp := send(t, c, "POST", "http://"+ro.Addr()+"/rules/versions", token, admintest.Wasm("a")); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(roLogs.String(), `msg="admin write refused"`) || !strings.Contains(roLogs.String(), "status=403 code=read_only") {
		t.Errorf("write to a read-only API = %d, logged:\n%s", resp.StatusCode, roLogs.String())
	}
}

// TestAdminSlowClients: the admin listener disconnects a client that dribbles its headers
// once ReadHeaderTimeout passed, and answers 431 to header lines over MaxHeaderBytes.
func TestAdminSlowClients(t *testing.T) {
	s, _ := startAdmin(t, admintest.New("care"), admin.Options{Token: []byte(token), ReadHeaderTimeout: 300 * time.Millisecond})
	if took := testutil.Slowloris(t, s.Addr(), "/rules/versions", 10*time.Second); took < 300*time.Millisecond {
		t.Errorf("connection closed after %v, before ReadHeaderTimeout 300ms", took)
	}

	big, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	go func() {
		_, _ = io.WriteString(big, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", admin.DefaultMaxHeaderBytes+8192)+"\r\n\r\n")
	}()
	_ = big.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(big), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers over MaxHeaderBytes = %d, want 431", resp.StatusCode)
	}
}
