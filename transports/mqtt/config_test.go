package mqtt

import (
	"bytes"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// docExamples returns the YAML blocks of the package documentation, by the key under which
// they configure a module ("inputs", "outputs", "broker").
func docExamples(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "doc.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	p, err := doc.NewFromFiles(fset, []*ast.File{f}, "github.com/turnout-router/turnout/transports/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var block []string
	flush := func() {
		if len(block) > 0 {
			key, _, _ := strings.Cut(block[0], ":")
			out[key] = strings.Join(block, "\n")
		}
		block = nil
	}
	for _, line := range strings.Split(p.Doc, "\n") {
		if strings.HasPrefix(line, "\t") {
			block = append(block, strings.TrimPrefix(line, "\t"))
			continue
		}
		flush()
	}
	flush()
	return out
}

// strictDecode decodes the single module block below top.name (or top itself) with unknown
// keys refused, as turnout's configuration loader does.
func strictDecode(t *testing.T, src string, v any) {
	t.Helper()
	var outer map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(src), &outer); err != nil {
		t.Fatal(err)
	}
	for _, n := range outer {
		node := n
		if n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[1].Kind == yaml.MappingNode {
			node = *n.Content[1] // inputs: {name: {...}}
		}
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		if err := enc.Encode(&node); err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(&buf)
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			t.Fatalf("decode documented example: %v\n%s", err, src)
		}
	}
}

// TestDocumentedExamplesAreValid decodes the package documentation's YAML examples strictly and
// validates them, so the documentation cannot drift from the configuration structs.
func TestDocumentedExamplesAreValid(t *testing.T) {
	ex := docExamples(t)
	for _, key := range []string{"inputs", "outputs", "broker"} {
		if ex[key] == "" {
			t.Fatalf("no %q example in the package documentation", key)
		}
	}
	t.Run("input", func(t *testing.T) {
		var c struct {
			Type        string `yaml:"type"`
			InputConfig `yaml:",inline"`
		}
		strictDecode(t, ex["inputs"], &c)
		if err := c.InputConfig.validate(); err != nil {
			t.Fatal(err)
		}
		if c.ClientID == "" || len(c.Topics) != 2 || c.KeepAlive != 30*time.Second || c.ReceiveBuffer != 1024 {
			t.Errorf("decoded %+v", c.InputConfig)
		}
	})
	t.Run("output", func(t *testing.T) {
		var c struct {
			Type         string `yaml:"type"`
			OutputConfig `yaml:",inline"`
		}
		strictDecode(t, ex["outputs"], &c)
		c.TLS = TLSConfig{} // the example's files do not exist here
		if _, err := c.OutputConfig.validate(); err != nil {
			t.Fatal(err)
		}
		if c.TopicTemplate != "alarms/{type}/{subject}" {
			t.Errorf("decoded %+v", c.OutputConfig)
		}
	})
	t.Run("broker", func(t *testing.T) {
		var c BrokerConfig
		strictDecode(t, ex["broker"], &c)
		if !c.Enabled || c.Listen != "127.0.0.1:1883" || c.Persistence != "broker" || c.TLS.ClientCAFile == "" ||
			len(c.Users) != 2 || len(c.Users[1].Subscribe) != 1 {
			t.Errorf("decoded %+v", c)
		}
		c.TLS = BrokerTLSConfig{} // the example's files do not exist here
		deps, _ := testDeps(t)
		deps.DataDir = t.TempDir()
		if _, err := NewBroker(c, deps); err != nil {
			t.Fatal(err)
		}
	})
}
