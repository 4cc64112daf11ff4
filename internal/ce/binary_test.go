package ce

import (
	"reflect"
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

// TestDecodeBinaryV1Agrees: the direct path for 1.0 builds the same events as sdk-go's
// attribute table, and leaves every error to it.
func TestDecodeBinaryV1Agrees(t *testing.T) {
	full := map[string]string{"specversion": "1.0", "id": " 1 ", "source": "https://example.com/x?y=1#z", "type": " t",
		"subject": "s ", "dataschema": "https://example.com/schema", "time": "2026-11-30T03:04:05.678901234+01:00", "site": "north", "n": ""}
	for name, tc := range map[string]struct {
		attrs       map[string]string
		contentType string
		data        string
		direct      bool
	}{
		"full":                                {full, "application/json", `{"a":1}`, true},
		"datacontenttype wins":                {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "datacontenttype": " text/plain "}, "application/json", "x", true},
		"blank subject":                       {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "subject": "  ", "dataschema": " "}, "", "", true},
		"binary data":                         {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, "application/octet-stream", "\x00\xff", true},
		"invalid JSON data":                   {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, "application/json", "{", true},
		"blank id":                            {map[string]string{"specversion": "1.0", "id": " ", "source": "/s", "type": "t"}, "", "", false},
		"bad time":                            {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "now"}, "", "", false},
		"bad source":                          {map[string]string{"specversion": "1.0", "id": "1", "source": "%zz", "type": "t"}, "", "", false},
		"data header":                         {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": "x"}, "", "", false},
		"missing type":                        {map[string]string{"specversion": "1.0", "id": "1", "source": "/s"}, "", "", false},
		"bad extension name":                  {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "a-b": "x"}, "", "", false},
		"extension named an attribute of 0.3": {map[string]string{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "schemaurl": "x"}, "", "", true},
	} {
		t.Run(name, func(t *testing.T) {
			want, wantErr := decodeBinarySpec("ce-", "1.0", tc.attrs, tc.contentType, []byte(tc.data))
			got, ok := decodeBinaryV1(tc.attrs, tc.contentType, []byte(tc.data))
			if ok != tc.direct {
				t.Errorf("direct path taken: %v, want %v (sdk-go's table: %v)", ok, tc.direct, wantErr)
			}
			if ok && (wantErr != nil || !reflect.DeepEqual(got, want)) {
				t.Errorf("direct path built %#v, sdk-go's table %#v, %v", got, want, wantErr)
			}
			if !ok && wantErr == nil {
				t.Errorf("direct path refused what sdk-go's table takes")
			}
		})
	}
}
