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
	"errors"
	"strconv"
	"strings"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

type filter struct {
	attribute string
	kind      byte // 'e' exact, 'p' prefix, 's' suffix
	value     string
	outputs   []string
	route     sdk.Decision
}

var (
	matchAll bool
	filters  []*filter
	fallback sdk.Decision
	union    []string
)

// parse reads the configuration strictly (unknown keys and wrong types are errors) with the
// SDK's JSON helpers: encoding/json would nearly double the module.
func parse(raw []byte) error {
	var (
		all      bool
		fs       []*filter
		defaults []string
		seen     = map[string]bool{}
	)
	err := sdk.JSONEach(raw, func(key, v []byte) error {
		k := string(key)
		if key == nil || seen[k] {
			return errors.New("want an object with each key once")
		}
		seen[k] = true
		switch k {
		case "match":
			m, ok := sdk.JSONString(v)
			if !ok || (m != "first" && m != "all") {
				return errors.New("match " + string(v) + ": want \"first\" or \"all\"")
			}
			all = m == "all"
		case "filters":
			i := 0
			return sdk.JSONEach(v, func(key, fv []byte) error {
				if key != nil {
					return errors.New("filters: want an array")
				}
				f, err := parseFilter(fv)
				if err != nil {
					return errors.New("filters[" + strconv.Itoa(i) + "]: " + err.Error())
				}
				fs = append(fs, f)
				i++
				return nil
			})
		case "default":
			d, err := sdk.JSONStrings(v)
			if err != nil {
				return errors.New("default: " + err.Error())
			}
			defaults = d
		default:
			return errors.New("unknown key " + strconv.Quote(k))
		}
		return nil
	})
	if err != nil {
		return errors.New("attrroute config: " + err.Error())
	}
	if len(fs) == 0 {
		return errors.New("attrroute config: filters: at least one filter is required")
	}
	matchAll, filters = all, fs
	fallback = sdk.Drop()
	if len(defaults) > 0 {
		fallback = sdk.Route(defaults...)
	}
	return nil
}

func parseFilter(raw []byte) (*filter, error) {
	f := &filter{}
	kinds := 0
	seen := map[string]bool{}
	err := sdk.JSONEach(raw, func(key, v []byte) error {
		k := string(key)
		if key == nil || seen[k] {
			return errors.New("want an object with each key once")
		}
		seen[k] = true
		switch k {
		case "attribute", "exact", "prefix", "suffix":
			s, ok := sdk.JSONString(v)
			if !ok {
				return errors.New(k + ": want a string, got " + string(v))
			}
			if k == "attribute" {
				f.attribute = s
			} else {
				kinds++
				f.kind, f.value = k[0], s
			}
		case "outputs":
			o, err := sdk.JSONStrings(v)
			if err != nil {
				return errors.New("outputs: " + err.Error())
			}
			f.outputs = o
		default:
			return errors.New("unknown key " + strconv.Quote(k))
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case f.attribute == "":
		return nil, errors.New("attribute is required")
	case kinds != 1:
		return nil, errors.New("exactly one of exact, prefix, suffix is required")
	case len(f.outputs) == 0:
		return nil, errors.New("outputs: at least one output is required")
	}
	f.route = sdk.Route(f.outputs...)
	return f, nil
}

func (f *filter) matches(e *sdk.Event) bool {
	v, ok := e.Attribute(f.attribute)
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
	if !matchAll {
		for _, f := range filters {
			if f.matches(e) {
				return f.route
			}
		}
		return fallback
	}
	union = union[:0]
	for _, f := range filters {
		if !f.matches(e) {
			continue
		}
	next:
		for _, o := range f.outputs {
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
