package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client talks to a running turnout's rules API; `turnout rules` uses it. It is a RuleService
// over HTTP: every error answer comes back as an *APIError carrying the server's code and
// detail. Safe for concurrent use.
type Client struct {
	// Base is the admin listener's URL (http://127.0.0.1:9090); a bare host:port means http.
	Base string
	// Token is sent as "Authorization: Bearer Token" when not empty.
	Token string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

var _ RuleService = (*Client)(nil)

// List implements RuleService.
func (c *Client) List(ctx context.Context) (Listing, error) {
	var l Listing
	err := c.do(ctx, http.MethodGet, "/rules", nil, "", &l)
	return l, err
}

// Show implements RuleService.
func (c *Client) Show(ctx context.Context, version string) (Version, error) {
	var v Version
	err := c.do(ctx, http.MethodGet, "/rules/versions/"+url.PathEscape(version), nil, "", &v)
	return v, err
}

// Upload implements RuleService. The module goes as the raw body, or as a multipart form when
// a self-test is attached.
func (c *Client) Upload(ctx context.Context, u Upload) (Uploaded, error) {
	q := url.Values{}
	for k, v := range map[string]string{"description": u.Description, "uploaded_by": u.UploadedBy, "route": u.Route, "config": string(u.DefaultConfig)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if u.Activate {
		q.Set("activate", strconv.FormatBool(true))
	}
	body, ctype := io.Reader(bytes.NewReader(u.Wasm)), "application/wasm"
	if u.SelfTest != nil {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, p := range []struct {
			name string
			data []byte
		}{{"wasm", u.Wasm}, {"selftest", u.SelfTest}} {
			w, err := mw.CreateFormField(p.name)
			if err != nil {
				return Uploaded{}, fmt.Errorf("rules upload: %w", err)
			}
			_, _ = w.Write(p.data) // a bytes.Buffer does not fail
		}
		if err := mw.Close(); err != nil {
			return Uploaded{}, fmt.Errorf("rules upload: %w", err)
		}
		body, ctype = &buf, mw.FormDataContentType()
	}
	path := "/rules/versions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var res Uploaded
	err := c.do(ctx, http.MethodPost, path, body, ctype, &res)
	return res, err
}

// Activate implements RuleService.
func (c *Client) Activate(ctx context.Context, route, version string) (Change, error) {
	b, _ := json.Marshal(map[string]string{"version": version}) // a map of strings always marshals
	var ch Change
	err := c.do(ctx, http.MethodPost, "/rules/routes/"+url.PathEscape(route)+"/activate", bytes.NewReader(b), "application/json", &ch)
	return ch, err
}

// Rollback implements RuleService.
func (c *Client) Rollback(ctx context.Context, route string) (Change, error) {
	var ch Change
	err := c.do(ctx, http.MethodPost, "/rules/routes/"+url.PathEscape(route)+"/rollback", nil, "", &ch)
	return ch, err
}

// Delete implements RuleService.
func (c *Client) Delete(ctx context.Context, version string) error {
	return c.do(ctx, http.MethodDelete, "/rules/versions/"+url.PathEscape(version), nil, "", nil)
}

// do sends one request and decodes a 2xx answer into out (when not nil), or returns the error
// answer as an *APIError. Transport errors are wrapped with the method and URL.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, ctype string, out any) error {
	base := strings.TrimRight(c.Base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return fmt.Errorf("rules api %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("rules api %s %s: %w", method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("rules api %s %s: read answer: %w", method, req.URL.Redacted(), err)
	}
	if resp.StatusCode/100 != 2 {
		var eb struct {
			Error *APIError `json:"error"`
		}
		if json.Unmarshal(data, &eb) != nil || eb.Error == nil {
			return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode),
				Detail: fmt.Sprintf("%s %s answered %s: %s", method, req.URL.Redacted(), resp.Status, strings.TrimSpace(string(data)))}
		}
		eb.Error.Status = resp.StatusCode
		return eb.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("rules api %s %s: decode answer: %w", method, req.URL.Redacted(), err)
	}
	return nil
}

// IsStatus reports whether err is an *APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}
