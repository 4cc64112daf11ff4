// Command attrroute is a stock turnout rule: it routes an event by matching its context
// attributes or extensions against a list of filters, in the manner of the CloudEvents
// Subscriptions API's exact, prefix and suffix filter dialects.
//
// Configuration (the route's rule config, JSON):
//
//	{
//	  "match": "first",                     // "first" (default): the first matching filter wins;
//	                                        // "all": the union of every matching filter's outputs
//	  "filters": [
//	    {"attribute": "type", "prefix": "alarm.", "outputs": ["urgent"]},
//	    {"attribute": "region", "exact": "north", "outputs": ["north"]}
//	  ],
//	  "default": ["archive"]                // outputs when nothing matches; absent or [] = drop
//	}
//
// Each filter names one attribute (a context attribute such as type, source or subject, or an
// extension) and exactly one of exact, prefix or suffix. An absent attribute never matches.
//
// Invariant: the decision depends only on the event and the configuration; the rule never
// fails an event once its configuration was accepted.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

type filter struct {
	Attribute string   `json:"attribute"`
	Exact     *string  `json:"exact"`
	Prefix    *string  `json:"prefix"`
	Suffix    *string  `json:"suffix"`
	Outputs   []string `json:"outputs"`

	kind  byte // 'e', 'p', 's'
	value string
	route sdk.Decision
}

type config struct {
	Match   string    `json:"match"`
	Filters []*filter `json:"filters"`
	Default []string  `json:"default"`
}

var (
	cfg      config
	fallback sdk.Decision
	union    []string
)

func parse(raw []byte) error {
	var c config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("attrroute config: %w", err)
	}
	switch c.Match {
	case "":
		c.Match = "first"
	case "first", "all":
	default:
		return fmt.Errorf("attrroute config: match %q: want \"first\" or \"all\"", c.Match)
	}
	if len(c.Filters) == 0 {
		return errors.New("attrroute config: filters: at least one filter is required")
	}
	for i, f := range c.Filters {
		if f == nil || f.Attribute == "" {
			return fmt.Errorf("attrroute config: filters[%d]: attribute is required", i)
		}
		n := 0
		for k, v := range map[byte]*string{'e': f.Exact, 'p': f.Prefix, 's': f.Suffix} {
			if v != nil {
				n++
				f.kind, f.value = k, *v
			}
		}
		if n != 1 {
			return fmt.Errorf("attrroute config: filters[%d]: exactly one of exact, prefix, suffix is required", i)
		}
		if len(f.Outputs) == 0 {
			return fmt.Errorf("attrroute config: filters[%d]: outputs: at least one output is required", i)
		}
		f.route = sdk.Route(f.Outputs...)
	}
	cfg = c
	fallback = sdk.Drop()
	if len(c.Default) > 0 {
		fallback = sdk.Route(c.Default...)
	}
	return nil
}

func (f *filter) matches(e *sdk.Event) bool {
	v, ok := e.Attribute(f.Attribute)
	if !ok {
		return false
	}
	switch f.kind {
	case 'e':
		return v == f.value
	case 'p':
		return strings.HasPrefix(v, f.value)
	default:
		return strings.HasSuffix(v, f.value)
	}
}

func decide(e *sdk.Event) sdk.Decision {
	if cfg.Match == "first" {
		for _, f := range cfg.Filters {
			if f.matches(e) {
				return f.route
			}
		}
		return fallback
	}
	union = union[:0]
	for _, f := range cfg.Filters {
		if !f.matches(e) {
			continue
		}
	next:
		for _, o := range f.Outputs {
			for _, u := range union {
				if u == o {
					continue next
				}
			}
			union = append(union, o)
		}
	}
	if len(union) == 0 {
		return fallback
	}
	// The SDK encodes the decision before the next call, so reusing union is safe.
	return sdk.Route(union...)
}

func init() {
	sdk.OnInit(parse)
	sdk.Handle(decide)
}
