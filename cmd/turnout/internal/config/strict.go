package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/internal/bytesize"
)

// Strict decoding. yaml.v3 can only reject unknown keys when it decodes bytes, and its errors
// then carry the line of the re-encoded text, not of the user's file. So decodeStrict walks the
// node tree alongside the Go type first: it reports unknown and duplicate keys, wrong shapes
// (a mapping where a list belongs) and bad scalars at the key's line in the original file and
// under the key's full path, and normalises durations (an integer 0 means "0s"). Only a tree
// that passed the walk is handed to yaml.v3's Node.Decode, which keeps the original lines too.
//
// Aliases are not followed by the walk (their anchor is checked where it is defined); Decode
// resolves them with yaml.v3's own protections against alias bombs.

var (
	nodeType            = reflect.TypeOf(yaml.Node{})
	durationType        = reflect.TypeOf(time.Duration(0))
	unmarshalerType     = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	sizeType            = reflect.TypeOf(bytesize.Size(0))
)

// decodeStrict decodes n into v (a pointer), reporting every problem to c under path. It reports
// whether the decoding succeeded.
func decodeStrict(c *collector, n *yaml.Node, path string, v any) bool {
	before := len(c.errs)
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		c.add(lineOf(n), path, "internal error: decode target %T is not a pointer", v)
		return false
	}
	if n == nil {
		return true
	}
	w := walker{c: c}
	w.check(n, rv.Type().Elem(), path)
	// Decode even after errors, for a partial result the caller can check further; yaml.v3 skips
	// unknown keys and leaves bad values zero. Its errors are only new if the walk found none.
	err := safeDecode(n, v)
	if len(c.errs) > before {
		return false
	}
	if err != nil {
		addYAMLError(c, n, path, err)
		return false
	}
	return true
}

// safeDecode is n.Decode(v), turning a panic inside yaml.v3 (v3.0.1 panics on some malformed
// merge keys, found by FuzzLoadConfig) into an error.
func safeDecode(n *yaml.Node, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("line %d: malformed YAML (%v)", n.Line, p)
		}
	}()
	return n.Decode(v)
}

func lineOf(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	return n.Line
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// addYAMLError turns an error from yaml.v3 into located Errors.
func addYAMLError(c *collector, n *yaml.Node, path string, err error) {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, s := range te.Errors {
			line, msg := lineOf(n), s
			if m := yamlLine.FindStringSubmatch(s); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = m[2]
			}
			c.add(line, path, "%s", msg)
		}
		return
	}
	msg := err.Error()
	line := lineOf(n)
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if parserProblems[msg] {
			// yaml.v3 v3.0.1 reports parser errors (unlike scanner errors) with a 0-based line.
			line++
		}
	}
	c.add(line, path, "%s", strings.TrimPrefix(msg, "yaml: "))
}

// parserProblems are the messages of yaml.v3's parser errors (parserc.go).
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

type walker struct {
	c *collector
}

func (w *walker) check(n *yaml.Node, t reflect.Type, path string) {
	if n == nil || n.Kind == yaml.AliasNode {
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	for t.Kind() == reflect.Pointer {
		if t.Elem() == nodeType {
			return
		}
		t = t.Elem()
	}
	if t == nodeType {
		return
	}
	if isNull(n) {
		return
	}
	if t == durationType {
		w.duration(n, path)
		return
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		// The type decodes itself; let it speak for its own node.
		if err := safeDecode(n, reflect.New(t).Interface()); err != nil {
			addYAMLError(w.c, n, path, err)
		}
		return
	}
	if pt.Implements(textUnmarshalerType) || t.Implements(textUnmarshalerType) {
		w.leaf(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		w.structure(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.c.add(n.Line, path, "expected a mapping, got %s", describe(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.ShortTag() == "!!merge" {
				w.check(v, t, path)
				continue
			}
			if first, dup := seen[k.Value]; dup {
				w.c.add(k.Line, join(path, k.Value), "duplicate key (first defined at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			if kt := t.Key(); kt.Kind() != reflect.Interface {
				w.check(k, kt, join(path, k.Value))
			}
			w.check(v, t.Elem(), join(path, k.Value))
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && n.Kind == yaml.ScalarNode {
			w.leaf(n, t, path)
			return
		}
		if n.Kind != yaml.SequenceNode {
			w.c.add(n.Line, path, "expected a list, got %s", describe(n))
			return
		}
		for i, e := range n.Content {
			w.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Interface:
		// Any YAML is fine.
	default:
		w.leaf(n, t, path)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's shape for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "a document"
}

func (w *walker) leaf(n *yaml.Node, t reflect.Type, path string) {
	want := wantName(t)
	if n.Kind != yaml.ScalarNode {
		w.c.add(n.Line, path, "expected %s, got %s", want, describe(n))
		return
	}
	if err := safeDecode(n, reflect.New(t).Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			w.c.add(n.Line, path, "invalid value %q: expected %s", n.Value, want)
			return
		}
		addYAMLError(w.c, n, path, err)
	}
}

func wantName(t reflect.Type) string {
	if t == sizeType {
		return "a size such as 256MiB"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// duration checks a duration scalar and rewrites an integer 0 to "0s", which yaml.v3 would
// otherwise reject.
func (w *walker) duration(n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode {
		w.c.add(n.Line, path, "expected a duration such as 500ms or 10s, got %s", describe(n))
		return
	}
	if n.ShortTag() == "!!int" {
		if i, err := strconv.ParseInt(n.Value, 0, 64); err == nil && i == 0 {
			n.Value, n.Tag, n.Style = "0s", "!!str", 0
			return
		}
		w.c.add(n.Line, path, "duration %q needs a unit, e.g. %ss or %sms", n.Value, n.Value, n.Value)
		return
	}
	if _, err := time.ParseDuration(n.Value); err != nil {
		w.c.add(n.Line, path, "invalid duration %q: want a number with a unit (ns, us, ms, s, m, h), e.g. 500ms or 1m30s", n.Value)
	}
}

type fieldInfo struct {
	typ reflect.Type
}

type structInfo struct {
	fields    map[string]fieldInfo
	inlineMap reflect.Type // element type of an ",inline" map, or nil
}

// fieldsOf mirrors yaml.v3's rules for a struct's keys: the yaml tag's name, or the lowercased
// field name; "-" is skipped; ",inline" structs and maps contribute their keys.
func fieldsOf(t reflect.Type) structInfo {
	si := structInfo{fields: map[string]fieldInfo{}}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.PkgPath != "" && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			inline := false
			for _, o := range strings.Split(opts, ",") {
				if o == "inline" {
					inline = true
				}
			}
			if inline {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				switch ft.Kind() {
				case reflect.Struct:
					add(ft)
				case reflect.Map:
					si.inlineMap = ft.Elem()
				}
				continue
			}
			if f.PkgPath != "" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			si.fields[name] = fieldInfo{typ: f.Type}
		}
	}
	add(t)
	return si
}

func (w *walker) structure(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.c.add(n.Line, path, "expected a mapping, got %s", describe(n))
		return
	}
	si := fieldsOf(t)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.c.add(k.Line, path, "a key must be a plain string, got %s", describe(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			if v.Kind == yaml.MappingNode {
				w.structure(v, t, path)
			}
			continue
		}
		key := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			w.c.add(k.Line, key, "duplicate key (first defined at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := si.fields[k.Value]
		if !ok {
			if si.inlineMap != nil {
				w.check(v, si.inlineMap, key)
				continue
			}
			w.c.add(k.Line, key, "unknown key (known keys: %s)", strings.Join(sortedKeys(si.fields), ", "))
			continue
		}
		w.check(v, f.typ, key)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
