package engine

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Deps is what the host process hands to every module it builds.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// DataDir is turnout's data directory; a module keeps its state below DataDir/<module type>.
	DataDir string
}

// Decoder decodes a module's own configuration block into v, strictly: unknown keys are
// errors, and errors name the key and its line in the configuration file.
type Decoder func(v any) error

// InputFactory builds a Source named name from its configuration. It validates the
// configuration and returns an error naming the bad key; it does not connect (Start does).
type InputFactory func(name string, decode Decoder, deps Deps) (Source, error)

// OutputFactory builds a Sink named name from its configuration, like InputFactory.
type OutputFactory func(name string, decode Decoder, deps Deps) (Sink, error)

var registry struct {
	sync.Mutex
	inputs  map[string]InputFactory
	outputs map[string]OutputFactory
}

// RegisterInput makes an input type available to configurations. Transports call it from init;
// registering a type twice panics, as it is a programming error.
func RegisterInput(typ string, f InputFactory) {
	registry.Lock()
	defer registry.Unlock()
	if registry.inputs == nil {
		registry.inputs = map[string]InputFactory{}
	}
	if _, dup := registry.inputs[typ]; dup {
		panic("engine: input type registered twice: " + typ)
	}
	registry.inputs[typ] = f
}

// RegisterOutput makes an output type available to configurations, like RegisterInput.
func RegisterOutput(typ string, f OutputFactory) {
	registry.Lock()
	defer registry.Unlock()
	if registry.outputs == nil {
		registry.outputs = map[string]OutputFactory{}
	}
	if _, dup := registry.outputs[typ]; dup {
		panic("engine: output type registered twice: " + typ)
	}
	registry.outputs[typ] = f
}

// LookupInput returns the factory for an input type.
func LookupInput(typ string) (InputFactory, error) {
	registry.Lock()
	defer registry.Unlock()
	if f, ok := registry.inputs[typ]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("unknown input type %q (known: %v)", typ, keys(registry.inputs))
}

// LookupOutput returns the factory for an output type.
func LookupOutput(typ string) (OutputFactory, error) {
	registry.Lock()
	defer registry.Unlock()
	if f, ok := registry.outputs[typ]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("unknown output type %q (known: %v)", typ, keys(registry.outputs))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
