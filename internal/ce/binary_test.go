package ce

import (
	"strings"
	"testing"
)

func TestDecodeBinary(t *testing.T) {
	minimal := func(more ...string) map[string]string {
		m := map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}
	tests := []struct {
		name, prefix string
		attrs        map[string]string
		contentType  string
		data         string
		wantErr      string
		check        func(t *testing.T, attr func(string) string)
	}{
		{name: "minimal", prefix: "ce-", attrs: minimal(), check: func(t *testing.T, attr func(string) string) {
			if attr("id") != "1" || attr("source") != "/s" || attr("type") != "t" {
				t.Errorf("id %q source %q type %q", attr("id"), attr("source"), attr("type"))
			}
		}},
		{name: "content type is datacontenttype", prefix: "ce_", attrs: minimal(), contentType: "application/json", data: `{"a":1}`,
			check: func(t *testing.T, attr func(string) string) {
				if got := attr("datacontenttype"); got != "application/json" {
					t.Errorf("datacontenttype %q", got)
				}
			}},
		{name: "datacontenttype header wins", prefix: "ce-", attrs: minimal("datacontenttype", "text/plain"), contentType: "application/json",
			check: func(t *testing.T, attr func(string) string) {
				if got := attr("datacontenttype"); got != "text/plain" {
					t.Errorf("datacontenttype %q", got)
				}
			}},
		{name: "extensions and time", prefix: "ce_", attrs: minimal("site", "north", "time", "2026-11-30T03:04:05.678901234Z"),
			check: func(t *testing.T, attr func(string) string) {
				if attr("site") != "north" || attr("time") != "2026-11-30T03:04:05.678901234Z" {
					t.Errorf("site %q time %q", attr("site"), attr("time"))
				}
			}},
		{name: "no specversion", prefix: "ce_", attrs: map[string]string{"id": "1"}, wantErr: "nor a ce_specversion header"},
		{name: "unknown specversion", prefix: "ce-", attrs: minimal("specversion", "2.0"), wantErr: `ce-specversion: unsupported value "2.0"`},
		{name: "bad time names its header", prefix: "ce_", attrs: minimal("time", "yesterday"), wantErr: "ce_time:"},
		{name: "data is no attribute", prefix: "ce-", attrs: minimal("data", "x"), wantErr: "ce-data: not an attribute"},
		{name: "missing id", prefix: "ce-", attrs: map[string]string{"specversion": "1.0", "source": "/s", "type": "t"}, wantErr: "id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeBinary(tc.prefix, tc.attrs, tc.contentType, []byte(tc.data))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(e.Data()) != tc.data {
				t.Errorf("data %q, want %q", e.Data(), tc.data)
			}
			tc.check(t, func(name string) string { return AttrString(e, name) })
		})
	}
}
