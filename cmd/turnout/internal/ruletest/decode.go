package ruletest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
)

// ExpectSuffix names the file holding the expectations of NAME.json: NAME.expect.json.
const ExpectSuffix = ".expect.json"

// MaxFileSize bounds one sample or expectation file.
const MaxFileSize = 16 << 20

var validActions = map[string]bool{ActionDrop: true, ActionRoute: true, ActionFail: true, ActionError: true}

// DecodeSamples decodes a sample file's bytes: one structured JSON CloudEvent, or an array of
// them, each possibly with an "expect" member. name labels the samples and the errors.
func DecodeSamples(name string, data []byte) ([]Sample, error) {
	raws, array, err := elements(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if array && len(raws) == 0 {
		return nil, fmt.Errorf("%s: an empty array: no events", name)
	}
	out := make([]Sample, 0, len(raws))
	for i, raw := range raws {
		label := name
		if array {
			label = fmt.Sprintf("%s[%d]", name, i)
		}
		s, err := decodeSample(label, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// elements splits a JSON value into its array elements, or returns it alone.
func elements(data []byte) ([]json.RawMessage, bool, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(data, &raws); err != nil {
			return nil, true, fmt.Errorf("not a JSON array of events: %w", err)
		}
		return raws, true, nil
	}
	if !json.Valid(data) {
		return nil, false, errors.New("not JSON (want one CloudEvent object or an array of them)")
	}
	return []json.RawMessage{data}, false, nil
}

func decodeSample(label string, raw []byte) (Sample, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return Sample{}, fmt.Errorf("%s: want a CloudEvent JSON object", label)
	}
	s := Sample{Name: label}
	if x, ok := members["expect"]; ok {
		exp, err := DecodeExpectation(x)
		if err != nil {
			return Sample{}, fmt.Errorf("%s: expect: %w", label, err)
		}
		s.Expect = exp
		delete(members, "expect")
		if raw, err = json.Marshal(members); err != nil {
			return Sample{}, fmt.Errorf("%s: %w", label, err)
		}
	}
	e := event.New()
	if err := json.Unmarshal(raw, &e); err != nil {
		return Sample{}, fmt.Errorf("%s: not a structured CloudEvent: %w", label, err)
	}
	if err := e.Validate(); err != nil {
		return Sample{}, fmt.Errorf("%s: invalid CloudEvent: %w", label, err)
	}
	s.Event = &e
	return s, nil
}

// DecodeExpectation decodes one expectation strictly: unknown members are errors, action is
// required and is drop, route, fail or error.
func DecodeExpectation(raw []byte) (*Expectation, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var x Expectation
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("not an expectation object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the expectation")
	}
	if !validActions[x.Action] {
		return nil, fmt.Errorf("action %q: want drop, route, fail or error", x.Action)
	}
	if x.Error != "" && x.Action != ActionError {
		return nil, fmt.Errorf("error %q given for action %q: only action \"error\" has an error kind", x.Error, x.Action)
	}
	return &x, nil
}

// DecodeExpectations decodes an expectation file's bytes for n samples: one expectation (n is
// 1) or an array of exactly n.
func DecodeExpectations(name string, data []byte, n int) ([]*Expectation, error) {
	raws, array, err := elements(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(raws) != n {
		return nil, fmt.Errorf("%s: %d expectation(s) for %d event(s)", name, len(raws), n)
	}
	out := make([]*Expectation, n)
	for i, raw := range raws {
		label := name
		if array {
			label = fmt.Sprintf("%s[%d]", name, i)
		}
		if out[i], err = DecodeExpectation(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
	}
	return out, nil
}

// Load reads the samples of path: a sample file, or a directory whose *.json files (not
// *.expect.json, not in subdirectories) are read in name order. Expectations come from the
// "expect" members or from NAME.expect.json beside NAME.json; both for one file is an error.
func Load(path string) ([]Sample, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		for _, de := range entries {
			n := de.Name()
			if de.Type().IsRegular() && strings.HasSuffix(n, ".json") && !strings.HasSuffix(n, ExpectSuffix) {
				files = append(files, filepath.Join(path, n))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no *.json sample files", path)
		}
	}
	var all []Sample
	for _, f := range files {
		s, err := loadFile(f)
		if err != nil {
			return nil, err
		}
		all = append(all, s...)
	}
	return all, nil
}

func loadFile(path string) ([]Sample, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	samples, err := DecodeSamples(path, data)
	if err != nil {
		return nil, err
	}
	xpath := strings.TrimSuffix(path, ".json") + ExpectSuffix
	xdata, err := readLimited(xpath)
	if errors.Is(err, fs.ErrNotExist) {
		return samples, nil
	}
	if err != nil {
		return nil, err
	}
	for _, s := range samples {
		if s.Expect != nil {
			return nil, fmt.Errorf("%s: has an \"expect\" member and %s exists: keep one", s.Name, xpath)
		}
	}
	exps, err := DecodeExpectations(xpath, xdata, len(samples))
	if err != nil {
		return nil, err
	}
	for i := range samples {
		samples[i].Expect = exps[i]
	}
	return samples, nil
}

// readLimited reads a file of at most MaxFileSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: more than the limit of %d bytes", path, MaxFileSize)
	}
	return data, nil
}
