package httpin

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// binaryFastCases are binary-mode requests (header lines "Name: value", then the body); fast
// says whether decodeBinaryFast must take them rather than leave them to decodeBinary.
var binaryFastCases = []struct {
	name    string
	headers []string
	body    string
	fast    bool
}{
	{"typical", []string{"Content-Type: application/json", "Ce-Specversion: 1.0", "Ce-Id: bench-1", "Ce-Source: /reliability/generator", "Ce-Type: care.alarm.fall", "Ce-Time: 2026-12-05T07:00:00.123456Z", "Ce-Site: north", "User-Agent: x", "Content-Length: 9"}, `{"seq":1}`, true},
	{"all attributes", []string{"Content-Type: text/plain; charset=utf-8", "Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: https://example.com/x?y=1", "Ce-Type: t", "Ce-Subject: s", "Ce-Dataschema: https://example.com/schema", "Ce-Seq: 5"}, "hello", true},
	{"percent-encoded", []string{"Ce-Specversion: 1.0", "Ce-Id: id%201", "Ce-Source: /s", "Ce-Type: caf%C3%A9", "Ce-Note: 100%25"}, "", true},
	{"binary data", []string{"Content-Type: application/octet-stream", "Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, "\x00\xff", true},
	{"invalid JSON data", []string{"Content-Type: application/json", "Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, "{not json", true},
	{"no content type", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, `[1]`, true},
	{"empty subject", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t", "Ce-Subject: "}, "", false},

	// Left to decodeBinary, valid or not.
	{"0.3", []string{"Ce-Specversion: 0.3", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"no specversion", []string{"Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"missing id", []string{"Ce-Specversion: 1.0", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"bad time", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t", "Ce-Time: yesterday"}, "", false},
	{"header twice", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Id: 2", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"bad name", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t", "Ce-My_ext: x"}, "", false},
	{"ce-datacontenttype", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t", "Ce-Datacontenttype: text/plain"}, "", false},
	{"ce-data", []string{"Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t", "Ce-Data: x"}, "", false},
	{"bad percent-encoding", []string{"Ce-Specversion: 1.0", "Ce-Id: %zz", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"not UTF-8", []string{"Ce-Specversion: 1.0", "Ce-Id: %ff", "Ce-Source: /s", "Ce-Type: t"}, "", false},
	{"lower-case names", []string{"ce-specversion: 1.0", "ce-id: 1", "ce-source: /s", "ce-type: t"}, "", false},
	{"empty content type", []string{"Content-Type: ", "Ce-Specversion: 1.0", "Ce-Id: 1", "Ce-Source: /s", "Ce-Type: t"}, "x", false},
}

func headerOf(lines []string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ": ")
		h[k] = append(h[k], v)
	}
	return h
}

// checkBinaryFastAgrees fails t when decodeBinaryFast returns an event that differs in
// anything from decodeBinary's for the same request, or one decodeBinary refuses.
func checkBinaryFastAgrees(t *testing.T, h http.Header, body []byte) (fast bool) {
	t.Helper()
	got, ok := decodeBinaryFast(h, body)
	if !ok {
		return false
	}
	want, err := decodeBinary(h, body)
	if err != nil {
		t.Fatalf("decodeBinaryFast took %v %q, decodeBinary refuses it: %v", h, body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeBinaryFast and decodeBinary differ on %v %q:\n got %s\nwant %s", h, body, got, want)
	}
	return true
}

func TestDecodeBinaryFastAgrees(t *testing.T) {
	for _, tc := range binaryFastCases {
		t.Run(tc.name, func(t *testing.T) {
			h := headerOf(tc.headers)
			if fast := checkBinaryFastAgrees(t, h, []byte(tc.body)); fast != tc.fast {
				t.Errorf("taken by decodeBinaryFast: %v, want %v", fast, tc.fast)
			}
			// Whatever path it takes, the request decodes as decodeBinary alone decodes it.
			parts := decodeRequest(h, []byte(tc.body))
			want, wantErr := decodeBinary(h, []byte(tc.body))
			if len(parts) != 1 {
				t.Fatalf("%d parts", len(parts))
			}
			if wantErr != nil {
				if parts[0].Err == nil || parts[0].Err.Error() != wantErr.Error() {
					t.Errorf("error %v, want %v", parts[0].Err, wantErr)
				}
				return
			}
			if !reflect.DeepEqual(parts[0].Event, want) {
				t.Errorf("event %s, want %s", parts[0].Event, want)
			}
		})
	}
}

func FuzzDecodeBinaryFast(f *testing.F) {
	for _, tc := range binaryFastCases {
		f.Add(strings.Join(tc.headers, "\n"), []byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		h := headerOf(strings.Split(headers, "\n"))
		checkBinaryFastAgrees(t, h, body)
	})
}
