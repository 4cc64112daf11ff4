package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// hashTree returns the sha256 of every file under dir, by path relative to dir.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		sum := sha256.Sum256(b)
		sums[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// TestAdminRefusalsLeaveStoreUntouched runs turnout with a rule and an admin token, stores and
// activates a version, then sends the rules API every kind of request it refuses: wrong or
// missing token on each write, module bytes that do not validate, an upload over
// admin.max_upload_bytes, bad metadata, writes the store refuses, and, once the address made
// too many wrong attempts, requests rate-limited with 429 (the right token included). Every file
// under the rule store is byte-identical afterwards, and each refusal was logged.
func TestAdminRefusalsLeaveStoreUntouched(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain; run without -short")
	}
	dir := t.TempDir()
	pass, err := rulebuild.Build("filters/rules/passthrough")
	if err != nil {
		t.Fatalf("build rule: %v", err)
	}
	v2, v3 := withCustomSection(pass, "turnout-test-v2"), withCustomSection(pass, "turnout-test-v3")
	const tok = "refusals-token-0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "pass.wasm"), pass, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	maxUpload := len(v2) + 64
	adminAddr := testutil.FreeAddr(t)
	dataDir := filepath.Join(dir, "data")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin: { listen: "%s", token_file: "%s", max_upload_bytes: %d, auth_failure_burst: 6, auth_failure_window: 1h }
inputs: { a: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  care:
    inputs: [a]
    outputs: [out]
    rule: { file: pass.wasm, config: { outputs: [out] } }
`, dataDir, adminAddr, filepath.Join(dir, "token"), maxUpload))
	r := startRun(t, path, adminAddr)
	base := "http://" + adminAddr

	do := func(method, path, token, contentType string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("POST", "/rules/versions?route=care&activate=true", tok, "", v2); code != http.StatusCreated {
		t.Fatalf("upload and activate v2 = %d %s", code, body)
	}
	storeDir := filepath.Join(dataDir, "rules")
	before := hashTree(t, storeDir)
	if len(before) < 2 {
		t.Fatalf("the store holds %d files after an upload and an activation: %v", len(before), before)
	}

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	w, _ := mw.CreateFormFile("wasm", "v3.wasm")
	_, _ = w.Write(v3[:1024]) // the self-test is checked first: the module need not be whole
	w, _ = mw.CreateFormField("selftest")
	_, _ = w.Write([]byte(`[{"nope`))
	_ = mw.Close()

	id2 := rulestore.Sum(v2)
	refusals := []struct {
		name, method, path, token, contentType string
		body                                   []byte
		status                                 int
	}{
		{"upload without token", "POST", "/rules/versions?route=care&activate=true", "", "", v3, 401},
		{"upload with a wrong token", "POST", "/rules/versions", "wrong-token-0123456789", "", v3, 401},
		{"activate with a wrong token", "POST", "/rules/routes/care/activate", "wrong", "", []byte(`{"version":"` + id2 + `"}`), 401},
		{"rollback with a wrong token", "POST", "/rules/routes/care/rollback", "wrong", "", nil, 401},
		{"delete with a wrong token", "DELETE", "/rules/versions/" + id2, "wrong", "", nil, 401},
		{"bytes that are not Wasm", "POST", "/rules/versions?route=care&activate=true", tok, "", []byte("not a module at all"), 422},
		{"a truncated module", "POST", "/rules/versions?route=care&activate=true", tok, "", v3[:len(v3)/2], 422},
		{"an upload over max_upload_bytes", "POST", "/rules/versions?route=care&activate=true", tok, "", append(bytes.Clone(v3), make([]byte, 128)...), 413},
		{"a self-test that is not JSON", "POST", "/rules/versions?route=care&activate=true", tok, mw.FormDataContentType(), mp.Bytes(), 400},
		{"a config that is not JSON", "POST", "/rules/versions?config=%7B", tok, "", v3, 400},
		{"activate an unknown version", "POST", "/rules/routes/care/activate", tok, "", []byte(`{"version":"00ff"}`), 404},
		{"delete the active version", "DELETE", "/rules/versions/" + id2, tok, "", nil, 409},
	}
	for _, rf := range refusals {
		if code, body := do(rf.method, rf.path, rf.token, rf.contentType, rf.body); code != rf.status {
			t.Errorf("%s: %d %s, want %d", rf.name, code, body, rf.status)
		}
	}
	// Wrong tokens until the address is rate-limited, then the right token is refused too. The
	// five refusals above took five of the six tries of auth_failure_burst (the default is 10),
	// so the second wrong token from here is the one answered 429.
	tries := 0
	for tries < 20 {
		tries++
		if code, _ := do("POST", "/rules/versions", "wrong", "", v3); code == http.StatusTooManyRequests {
			break
		}
	}
	if tries != 2 {
		t.Fatalf("the wrong token was answered 429 after %d more tries, want 2 (auth_failure_burst: 6, 5 spent)", tries)
	}
	if code, body := do("POST", "/rules/versions?route=care&activate=true", tok, "", v3); code != http.StatusTooManyRequests {
		t.Errorf("right token from a rate-limited address = %d %s, want 429", code, body)
	}

	after := hashTree(t, storeDir)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the rule store changed under refused requests:\nbefore %v\nafter  %v", before, after)
	}
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr.String())
	}
	log := r.stderr.String()
	if n, want := strings.Count(log, `msg="admin write refused"`), len(refusals)+2; n < want {
		t.Errorf("%d refused writes logged, want at least %d:\n%s", n, want, log)
	}
	for _, want := range []string{"status=413 code=too_large", "status=429 code=too_many_attempts", "status=422 code=not_wasm", "status=401 code=unauthorized"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}
