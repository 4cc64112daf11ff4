package ce

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// fastCases are events in the JSON format; fast says whether the one-pass reader must take
// them (the common shapes) rather than leave them to sdk-go's reader.
var fastCases = []struct {
	name string
	in   string
	fast bool
}{
	{"typical", `{"specversion":"1.0","id":"bench-1","source":"/reliability/generator","type":"care.alarm.fall","datacontenttype":"application/json","time":"2026-12-05T07:00:00.123456Z","site":"north","data":{"pad":"xx","seq":1}}`, true},
	{"blanks everywhere", " \n{ \"specversion\" : \"1.0\" ,\t\"id\":\"1\", \"source\" :\"s\",\"type\":\"t\", \"data\" : [1, 2.5e3, -0, true, false, null, {\"a\":\"\\u00e9\\n\"}] }\r\n", true},
	{"data before datacontenttype", `{"data":{"a":1},"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/json; charset=utf-8"}`, true},
	{"no data", `{"specversion":"1.0","id":"1","source":"https://example.com/x?y=1#z","type":"t","subject":"sub","dataschema":"https://example.com/schema"}`, true},
	{"text data", `{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"hello grüße"}`, true},
	{"text data before its type", `{"specversion":"1.0","id":"1","source":"s","type":"t","data": "hello","datacontenttype":"text/plain"}`, true},
	{"data_base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}`, true},
	{"data_base64 first", `{"data_base64":"AAE=","specversion":"1.0","id":"1","source":"s","type":"t"}`, true},
	{"empty data_base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":""}`, true},
	{"extensions", `{"specversion":"1.0","id":"1","source":"s","type":"t","seq":123456789,"neg":-42,"zero":0,"ok":true,"no":false,"s":"v","e":""}`, true},
	{"data null", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":null}`, true},
	{"time with offset", `{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2026-01-02T03:04:05+02:00"}`, true},

	// Left to sdk-go's reader, valid or not.
	{"escaped attribute", `{"specversion":"1.0","id":"a\"b","source":"s","type":"t"}`, false},
	{"escaped text data", `{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"a\nb"}`, false},
	{"big integer extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","n":1234567890}`, false},
	{"fraction extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","n":1.5}`, false},
	{"null extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","n":null}`, false},
	{"object extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","n":{}}`, false},
	{"0.3", `{"specversion":"0.3","id":"1","source":"s","type":"t"}`, false},
	{"no specversion", `{"id":"1","source":"s","type":"t"}`, false},
	{"duplicate id", `{"specversion":"1.0","id":"1","id":"2","source":"s","type":"t"}`, false},
	{"duplicate extension", `{"specversion":"1.0","id":"1","source":"s","type":"t","x":1,"x":2}`, false},
	{"empty subject", `{"specversion":"1.0","id":"1","source":"s","type":"t","subject":""}`, false},
	{"empty id", `{"specversion":"1.0","id":"","source":"s","type":"t"}`, false},
	{"upper-case member", `{"specversion":"1.0","id":"1","source":"s","type":"t","Data":1}`, false},
	{"data and data_base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}`, false},
	{"data_base64 after a blank", `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64": "AAE="}`, false},
	{"bad base64", `{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!!"}`, false},
	{"text data not a string", `{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":5}`, false},
	{"bad time", `{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}`, false},
	{"trailing garbage", `{"specversion":"1.0","id":"1","source":"s","type":"t"} x`, false},
	{"trailing comma", `{"specversion":"1.0","id":"1","source":"s","type":"t",}`, false},
	{"bad number in data", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":01}`, false},
	{"bad escape in data", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":"\x"}`, false},
	{"unterminated", `{"specversion":"1.0","id":"1","source":"s","type":"t","data":[1,`, false},
	{"schemaurl", `{"specversion":"1.0","id":"1","source":"s","type":"t","schemaurl":"x"}`, false},
	{"not an object", `["specversion"]`, false},
}

// checkFastAgrees fails t when the one-pass reader returns an event for b that differs in
// anything from what sdk-go's reader returns, or one that sdk-go's reader refuses.
func checkFastAgrees(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	if !utf8.Valid(b) {
		return false
	}
	got, ok := decodeFast(b)
	if !ok || untrimmed(got) { // DecodeStructured leaves untrimmed attributes to decodeSDK
		return false
	}
	want, err := decodeSDK(b)
	if err != nil {
		t.Fatalf("one-pass reader took %q, sdk-go's refuses it: %v", b, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("one-pass reader and sdk-go's differ on %q:\n got %s\nwant %s\n%s", b, dump(got), dump(want), strings.Join(Diff(want, got), "\n"))
	}
	return true
}

func dump(v any) string {
	return fmt.Sprintf("%#v", v)
}

func TestDecodeFastAgreesWithSDK(t *testing.T) {
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			if fast := checkFastAgrees(t, []byte(tc.in)); fast != tc.fast {
				t.Errorf("taken by the one-pass reader: %v, want %v", fast, tc.fast)
			}
			// Whatever path it takes, DecodeStructured answers as sdk-go's reader does.
			got, err := DecodeStructured([]byte(tc.in))
			want, wantErr := decodeSDK([]byte(tc.in))
			if fmt.Sprint(err) != fmt.Sprint(wantErr) {
				t.Errorf("error %v, want %v", err, wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Errorf("event %s, want %s", dump(got), dump(want))
			}
		})
	}
}

func FuzzDecodeFast(f *testing.F) {
	for _, tc := range fastCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFastAgrees(t, b)
	})
}

// BenchmarkDecodeStructured compares the one-pass reader with sdk-go's on a 300-byte event. On
// a shared machine, compare cpu-ns/op (the process's CPU time per decode) rather than ns/op.
func BenchmarkDecodeStructured(b *testing.B) {
	in := []byte(fastCases[0].in)
	for _, r := range []struct {
		name   string
		decode func([]byte) (*event.Event, error)
	}{{"one-pass", DecodeStructured}, {"sdk-go", decodeSDK}} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			for b.Loop() {
				if _, err := r.decode(in); err != nil {
					b.Fatal(err)
				}
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// checkReadBatch fails t when ReadBatch reads b otherwise than encoding/json and sdk-go's
// reader do: it must take exactly the valid JSON arrays, find the same elements, and decode
// only events sdk-go's reader decodes alike.
func checkReadBatch(t *testing.T, b []byte) {
	t.Helper()
	got, ok := ReadBatch(b)
	var raw []json.RawMessage
	err := json.Unmarshal(b, &raw)
	if !ok {
		if err == nil && utf8.Valid(b) && len(raw) > 0 {
			// Valid arrays go the one-pass way unless they nest deeper than maxFastDepth.
			if bytes.Count(b, []byte("["))+bytes.Count(b, []byte("{")) < maxFastDepth {
				t.Fatalf("ReadBatch refused the valid array %q", b)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("ReadBatch took %q, encoding/json refuses it: %v", b, err)
	}
	if len(got) != len(raw) {
		t.Fatalf("ReadBatch found %d elements in %q, encoding/json %d", len(got), b, len(raw))
	}
	for i, el := range got {
		if el.Event == nil {
			if !bytes.Equal(el.Raw, raw[i]) {
				t.Fatalf("element %d: %q, encoding/json %q", i, el.Raw, raw[i])
			}
			continue
		}
		want, err := decodeSDK(raw[i])
		if err != nil {
			t.Fatalf("element %d %q: decoded, sdk-go's reader refuses it: %v", i, raw[i], err)
		}
		if !reflect.DeepEqual(el.Event, want) {
			t.Fatalf("element %d %q: got %s, want %s", i, raw[i], dump(el.Event), dump(want))
		}
	}
}

func TestReadBatch(t *testing.T) {
	all := make([]string, len(fastCases))
	for i, tc := range fastCases {
		all[i] = tc.in
	}
	for _, b := range []string{
		"[" + all[0] + "," + all[2] + "]",
		" [ " + all[0] + " , 5 , \"x\" , " + all[12] + " ] ",
		"[]", " [ ] ", "[", "[1,]", "[1] x", "{}", "", "[" + all[0] + "", "[\"\xff\"]",
	} {
		checkReadBatch(t, []byte(b))
	}
	got, ok := ReadBatch([]byte("[" + all[0] + "," + all[2] + "," + all[12] + "]"))
	if !ok || len(got) != 3 || got[0].Event == nil || got[1].Event == nil || got[2].Event != nil {
		t.Errorf("ReadBatch = %v, %v; want two events decoded and the escaped one left", got, ok)
	}
}

func FuzzReadBatch(f *testing.F) {
	f.Add([]byte("[" + fastCases[0].in + "," + fastCases[4].in + ",1]"))
	f.Add([]byte("[]"))
	f.Fuzz(checkReadBatch)
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,-2.5e+3,true,false,null,"\u00e9\n"]}`, ` 0 `, `01`, `[1,]`, `"\x"`, "\"\xff\"", `-`, `1.`, `{"a" 1}`, `[]x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid %v", b, got, want)
		}
	})
}
