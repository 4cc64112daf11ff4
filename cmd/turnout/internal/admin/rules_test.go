package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/admin/admintest"
	"github.com/turnout-router/turnout/hostabi"
	"github.com/turnout-router/turnout/internal/testutil"
)

const token = "s3cret-token"

// rulesServer serves the rules API over fake with opts (Rules and Gatherer filled in), logging
// to the returned buffer.
func rulesServer(t *testing.T, fake *admintest.Fake, opts admin.Options) (*httptest.Server, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	opts.Rules = fake
	opts.Gatherer = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	srv := httptest.NewServer(admin.New(opts).Handler())
	t.Cleanup(srv.Close)
	return srv, logs
}

// call sends one request and returns the status and the decoded JSON error code (if any).
func call(t *testing.T, method, url, tok string, body []byte) (int, string, []byte) {
	t.Helper()
	resp, data := do(t, http.DefaultClient, method, url, tok, body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 300 && ct != "application/json" {
		t.Errorf("%s %s: error answer has Content-Type %q, want application/json", method, url, ct)
	}
	var eb struct {
		Error struct{ Code, Detail string }
	}
	_ = json.Unmarshal(data, &eb)
	return resp.StatusCode, eb.Error.Code, data
}

// do sends one request with c, with the bearer token tok when not empty, and returns the
// answer and its body (read and closed).
func do(t *testing.T, c *http.Client, method, url, tok string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func TestUploadValidationErrors(t *testing.T) {
	srv, _ := rulesServer(t, admintest.New("care"), admin.Options{Token: []byte(token)})
	for _, code := range []string{
		hostabi.CodeNotWasm, hostabi.CodeCompile, hostabi.CodeMemoryMinAboveCap, hostabi.CodeImportNotAllowed,
		hostabi.CodeExportMissing, hostabi.CodeABIVersionUnknown, hostabi.CodeInitFailed,
	} {
		t.Run(code, func(t *testing.T) {
			status, got, body := call(t, "POST", srv.URL+"/rules/versions?route=care", token, []byte("fail:"+code))
			if status != http.StatusUnprocessableEntity || got != code {
				t.Errorf("upload refused with %s = %d %q, want 422 %q: %s", code, status, got, code, body)
			}
			if !strings.Contains(string(body), "the module failed with "+code) {
				t.Errorf("the detail does not carry the loader's message: %s", body)
			}
		})
	}
	t.Run("plain bytes are not_wasm", func(t *testing.T) {
		if status, got, _ := call(t, "POST", srv.URL+"/rules/versions", token, []byte("hello")); status != 422 || got != hostabi.CodeNotWasm {
			t.Errorf("= %d %q, want 422 not_wasm", status, got)
		}
	})
	t.Run("failed self-test", func(t *testing.T) {
		c := &admin.Client{Base: srv.URL, Token: token}
		_, err := c.Upload(context.Background(), admin.Upload{Wasm: admintest.Wasm("st"), SelfTest: json.RawMessage(`[{"expect":"mismatch"}]`)})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != 422 || ae.Code != admin.CodeSelfTestFailed || !strings.Contains(ae.Detail, "expected route") {
			t.Errorf("upload with a failing self-test = %v, want 422 selftest_failed", err)
		}
	})
	t.Run("empty body", func(t *testing.T) {
		if status, got, _ := call(t, "POST", srv.URL+"/rules/versions", token, nil); status != 400 || got != admin.CodeBadRequest {
			t.Errorf("= %d %q, want 400 bad_request", status, got)
		}
	})
	t.Run("activate without route", func(t *testing.T) {
		if status, got, body := call(t, "POST", srv.URL+"/rules/versions?activate=true", token, admintest.Wasm("x")); status != 400 || !strings.Contains(string(body), "route=NAME") {
			t.Errorf("= %d %q %s, want 400 naming route", status, got, body)
		}
	})
	t.Run("invalid config JSON", func(t *testing.T) {
		if status, _, body := call(t, "POST", srv.URL+"/rules/versions?config=%7Bnope", token, admintest.Wasm("x")); status != 400 || !strings.Contains(string(body), "config is not valid JSON") {
			t.Errorf("= %d %s, want 400 config is not valid JSON", status, body)
		}
	})
}

func TestAuth(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        admin.Options
		tok         string
		read, write int
		writeCode   string
	}{
		{"no token configured: read-only", admin.Options{}, "", 200, 403, admin.CodeReadOnly},
		{"no token configured: a token does not help", admin.Options{}, token, 200, 403, admin.CodeReadOnly},
		{"token configured, none sent", admin.Options{Token: []byte(token)}, "", 401, 401, admin.CodeUnauthorized},
		{"wrong token", admin.Options{Token: []byte(token)}, "s3cret-tokeX", 401, 401, admin.CodeUnauthorized},
		{"token prefix", admin.Options{Token: []byte(token)}, "s3cret", 401, 401, admin.CodeUnauthorized},
		{"right token", admin.Options{Token: []byte(token)}, token, 200, 201, ""},
		{"reads open, no token sent", admin.Options{Token: []byte(token), RulesReadOpen: true}, "", 200, 401, admin.CodeUnauthorized},
		{"reads open, right token", admin.Options{Token: []byte(token), RulesReadOpen: true}, token, 200, 201, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := rulesServer(t, admintest.New("care"), tc.opts)
			if status, code, body := call(t, "GET", srv.URL+"/rules", tc.tok, nil); status != tc.read {
				t.Errorf("GET /rules = %d %q %s, want %d", status, code, body, tc.read)
			}
			status, code, body := call(t, "POST", srv.URL+"/rules/versions", tc.tok, admintest.Wasm("a"))
			if status != tc.write || code != tc.writeCode {
				t.Errorf("upload = %d %q, want %d %q: %s", status, code, tc.write, tc.writeCode, body)
			}
			if code == admin.CodeReadOnly && !strings.Contains(string(body), "admin.token_file") {
				t.Errorf("the read-only answer does not say how to configure a token: %s", body)
			}
			for _, p := range []string{"/metrics", "/healthz"} {
				if status, _, _ := call(t, "GET", srv.URL+p, "", nil); status != 200 {
					t.Errorf("GET %s without token = %d, want 200 (always open)", p, status)
				}
			}
		})
	}
	t.Run("every write route needs the token", func(t *testing.T) {
		srv, _ := rulesServer(t, admintest.New("care"), admin.Options{Token: []byte(token)})
		for _, r := range []struct{ method, path string }{
			{"POST", "/rules/versions"}, {"DELETE", "/rules/versions/abc"},
			{"POST", "/rules/routes/care/activate"}, {"POST", "/rules/routes/care/rollback"},
			{"GET", "/rules/versions/abc"},
		} {
			if status, _, _ := call(t, r.method, srv.URL+r.path, "", []byte(`{"version":"abc"}`)); status != 401 {
				t.Errorf("%s %s without token = %d, want 401", r.method, r.path, status)
			}
		}
	})
}

func TestUploadLimit(t *testing.T) {
	srv, _ := rulesServer(t, admintest.New("care"), admin.Options{Token: []byte(token), MaxUploadBytes: 1024})
	t.Run("at the limit", func(t *testing.T) {
		w := admintest.Wasm(strings.Repeat("x", 1024-8))
		if status, code, _ := call(t, "POST", srv.URL+"/rules/versions", token, w); status != 201 {
			t.Errorf("upload of %d bytes = %d %q, want 201", len(w), status, code)
		}
	})
	t.Run("above the limit", func(t *testing.T) {
		w := admintest.Wasm(strings.Repeat("x", 1024-7))
		status, code, body := call(t, "POST", srv.URL+"/rules/versions", token, w)
		if status != http.StatusRequestEntityTooLarge || code != admin.CodeTooLarge || !strings.Contains(string(body), "admin.max_upload_bytes") {
			t.Errorf("upload of %d bytes = %d %q %s, want 413 too_large naming admin.max_upload_bytes", len(w), status, code, body)
		}
	})
	t.Run("multipart above the limit", func(t *testing.T) {
		c := &admin.Client{Base: srv.URL, Token: token}
		_, err := c.Upload(context.Background(), admin.Upload{Wasm: admintest.Wasm(strings.Repeat("x", 2048)), SelfTest: json.RawMessage(`[]`)})
		if !admin.IsStatus(err, http.StatusRequestEntityTooLarge) {
			t.Errorf("multipart upload above the limit = %v, want 413", err)
		}
	})
}

func TestRulesLifecycle(t *testing.T) {
	srv, logs := rulesServer(t, admintest.New("care", "audit"), admin.Options{Token: []byte(token)})
	c := &admin.Client{Base: srv.URL, Token: token}
	ctx := context.Background()
	v1, v2 := admintest.Wasm("v1"), admintest.Wasm("v2")

	up1, err := c.Upload(ctx, admin.Upload{Wasm: v1, Route: "care", Activate: true, Description: "first", UploadedBy: "ana"})
	if err != nil || !up1.Created || up1.Activated == nil || up1.Activated.New != up1.Version.SHA256 {
		t.Fatalf("first upload = %+v, %v", up1, err)
	}
	t.Run("same bytes twice is idempotent", func(t *testing.T) {
		status, _, body := call(t, "POST", srv.URL+"/rules/versions", token, v1)
		var res admin.Uploaded
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK || res.Created || res.Version.SHA256 != up1.Version.SHA256 || res.Version.Description != "first" {
			t.Errorf("second upload = %d %+v, want 200 with the stored version", status, res)
		}
	})
	up2, err := c.Upload(ctx, admin.Upload{Wasm: v2, UploadedBy: "bo"})
	if err != nil || !up2.Created || up2.Activated != nil {
		t.Fatalf("second version = %+v, %v", up2, err)
	}
	t.Run("show", func(t *testing.T) {
		v, err := c.Show(ctx, up1.Version.SHA256[:12])
		if err != nil || v.SHA256 != up1.Version.SHA256 || v.Size != int64(len(v1)) || v.UploadedBy != "ana" ||
			v.ABIVersion != 1 || len(v.Exports) == 0 || v.UploadedAt.IsZero() || len(v.Routes) != 1 || v.Routes[0] != "care" {
			t.Errorf("show = %+v, %v", v, err)
		}
	})
	t.Run("activate", func(t *testing.T) {
		ch, err := c.Activate(ctx, "care", up2.Version.SHA256)
		if err != nil || ch.Old != up1.Version.SHA256 || ch.New != up2.Version.SHA256 {
			t.Errorf("activate = %+v, %v", ch, err)
		}
	})
	t.Run("delete in use", func(t *testing.T) {
		err := c.Delete(ctx, up2.Version.SHA256)
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != admin.CodeVersionInUse || !strings.Contains(ae.Detail, "care") {
			t.Errorf("delete of the active version = %v, want 409 version_in_use naming the route", err)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		ch, err := c.Rollback(ctx, "care")
		if err != nil || ch.Old != up2.Version.SHA256 || ch.New != up1.Version.SHA256 {
			t.Errorf("rollback = %+v, %v", ch, err)
		}
		if _, err := c.Rollback(ctx, "care"); !admin.IsStatus(err, http.StatusConflict) {
			t.Errorf("rollback with no history = %v, want 409", err)
		}
	})
	t.Run("delete unused", func(t *testing.T) {
		if err := c.Delete(ctx, up2.Version.SHA256); err != nil {
			t.Fatalf("delete = %v", err)
		}
		if _, err := c.Show(ctx, up2.Version.SHA256); !admin.IsStatus(err, http.StatusNotFound) {
			t.Errorf("show after delete = %v, want 404", err)
		}
	})
	t.Run("list", func(t *testing.T) {
		l, err := c.List(ctx)
		if err != nil || len(l.Versions) != 1 || len(l.Routes) != 2 || l.Routes[1].Name != "care" || l.Routes[1].Active != up1.Version.SHA256 {
			t.Errorf("list = %+v, %v", l, err)
		}
	})
	t.Run("unknown version and route are 404", func(t *testing.T) {
		for name, err := range map[string]error{
			"show":              func() error { _, err := c.Show(ctx, "ffff"); return err }(),
			"delete":            c.Delete(ctx, "ffff"),
			"activate version":  func() error { _, err := c.Activate(ctx, "care", "ffff"); return err }(),
			"activate on route": func() error { _, err := c.Activate(ctx, "nope", up1.Version.SHA256); return err }(),
			"rollback route":    func() error { _, err := c.Rollback(ctx, "nope"); return err }(),
			"upload for route":  func() error { _, err := c.Upload(ctx, admin.Upload{Wasm: v2, Route: "nope"}); return err }(),
		} {
			if !admin.IsStatus(err, http.StatusNotFound) {
				t.Errorf("%s = %v, want 404", name, err)
			}
		}
	})
	t.Run("changes are logged with who and what", func(t *testing.T) {
		out := logs.String()
		for _, want := range []string{
			`msg="rule version activated" who=token-holder remote=127.0.0.1:`,
			"route=care old=\"\" new=" + up1.Version.SHA256 + " uploaded_by=ana",
			"route=care old=" + up1.Version.SHA256 + " new=" + up2.Version.SHA256,
			`msg="rule version rolled back"`,
			`msg="rule version deleted" who=token-holder`,
			`msg="rule version uploaded"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, token) {
			t.Errorf("the token appears in the log")
		}
	})
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testutil.WriteCerts(t, dir, "127.0.0.1")
	s := admin.New(admin.Options{Listen: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Rules: admintest.New("care"),
		TLSCertFile: certFile, TLSKeyFile: keyFile})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	c := &admin.Client{Base: "https://" + s.Addr(), HTTP: hc}
	if _, err := c.List(context.Background()); err != nil {
		t.Errorf("list over TLS: %v", err)
	}
	if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP is served beside TLS")
		}
	}
	t.Run("a certificate that does not load names the keys", func(t *testing.T) {
		s := admin.New(admin.Options{Listen: "127.0.0.1:0", TLSCertFile: filepath.Join(dir, "nope.pem"), TLSKeyFile: keyFile})
		if err := s.Start(); err == nil || !strings.Contains(err.Error(), "admin.tls.cert_file") {
			t.Errorf("Start = %v, want an error naming admin.tls.cert_file", err)
		}
	})
}

func TestRulesUnavailableUntilSet(t *testing.T) {
	s := admin.New(admin.Options{Gatherer: prometheus.NewRegistry()})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	if status, code, _ := call(t, "GET", srv.URL+"/rules", "", nil); status != http.StatusServiceUnavailable || code != admin.CodeUnavailable {
		t.Errorf("GET /rules before SetRules = %d %q, want 503 unavailable", status, code)
	}
	s.SetRules(admintest.New("care"))
	if status, _, _ := call(t, "GET", srv.URL+"/rules", "", nil); status != http.StatusOK {
		t.Errorf("GET /rules after SetRules = %d, want 200", status)
	}
	s.SetRules(nil)
	if status, _, _ := call(t, "GET", srv.URL+"/rules", "", nil); status != http.StatusServiceUnavailable {
		t.Errorf("GET /rules after SetRules(nil) = %d, want 503", status)
	}
}

// FuzzUpload feeds the upload handler arbitrary bodies, content types and queries. Every answer
// is JSON, never a 500: a refusal is a 4xx {"error": {"code", "detail"}} saying what is wrong; a
// success stores exactly the module the request carried (the body, or the multipart "wasm"
// part), and never a module larger than the upload limit.
func FuzzUpload(f *testing.F) {
	f.Add([]byte("\x00asm\x01\x00\x00\x00"), "application/wasm", "route=care&activate=true")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"wasm\"\r\n\r\n\x00asm\r\n--b--\r\n"), "multipart/form-data; boundary=b", "")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"wasm\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=00asm=01\r\n"+
		"--b\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{\"outputs\":[\"a\"]}\r\n"+
		"--b\r\nContent-Disposition: form-data; name=\"selftest\"\r\n\r\n[{\"event\":{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"},\"expect\":{\"action\":\"drop\"}}]\r\n--b--\r\n"),
		"multipart/form-data; boundary=b", "description=first&uploaded_by=ops")
	f.Add([]byte("fail:compile"), "", "config=%7B%7D")
	f.Add([]byte{}, "multipart/form-data", "activate=maybe")
	f.Add(bytes.Repeat([]byte("\x00asm"), 1025), "application/wasm", "")
	const limit = 4096
	h := admin.New(admin.Options{Gatherer: prometheus.NewRegistry(), Rules: admintest.New("care"), Token: []byte(token), MaxUploadBytes: limit}).Handler()
	f.Fuzz(func(t *testing.T, body []byte, ctype, query string) {
		req := httptest.NewRequest("POST", "/rules/versions", bytes.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("answer %d %q", w.Code, w.Body.String())
		}
		if w.Code >= 400 {
			var e struct {
				Error *admin.APIError `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Detail == "" {
				t.Fatalf("refusal %d %q is not an error with a code and a detail (%v)", w.Code, w.Body.String(), err)
			}
			return
		}
		var up admin.Uploaded
		if err := json.Unmarshal(w.Body.Bytes(), &up); err != nil || (w.Code != http.StatusOK && w.Code != http.StatusCreated) {
			t.Fatalf("answer %d %q is not an upload's (%v)", w.Code, w.Body.String(), err)
		}
		wasm := body
		if mt, params, _ := mime.ParseMediaType(ctype); mt == "multipart/form-data" {
			wasm = nil
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			for {
				p, err := mr.NextPart()
				if err != nil {
					break
				}
				if p.FormName() == "wasm" {
					wasm, _ = io.ReadAll(p)
				}
			}
		}
		if len(wasm) > limit {
			t.Fatalf("a %d-byte module over the %d-byte upload limit was accepted", len(wasm), limit)
		}
		if sum := sha256.Sum256(wasm); up.Version.SHA256 != hex.EncodeToString(sum[:]) || up.Version.Size != int64(len(wasm)) {
			t.Fatalf("stored version %s (%d bytes), want the module sent, %x (%d bytes)", up.Version.SHA256, up.Version.Size, sum, len(wasm))
		}
	})
}
