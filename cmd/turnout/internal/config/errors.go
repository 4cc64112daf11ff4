package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem found in a configuration file, located by line and key.
type Error struct {
	// File is the configuration file's path as given to Load.
	File string
	// Line is the 1-based line in the original file; 0 when unknown.
	Line int
	// Key is the dotted path of the offending key (routes.care.inputs[1]); empty when the problem
	// is not tied to a key (a YAML syntax error, an unset environment variable).
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error formats e as "FILE:LINE: key: message", leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration, in file order once sorted. Load and Build
// return it (as error) so that a user sees all problems at once rather than one per attempt.
type Errors []*Error

// Error joins the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders the errors by line, keeping the discovery order for errors on the same line.
func (es Errors) Sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

// errOrNil returns es as an error, or nil when es is empty (a nil Errors in an error interface
// is not nil).
func (es Errors) errOrNil() error {
	if len(es) == 0 {
		return nil
	}
	es.Sort()
	return es
}

// collector accumulates errors for one file.
type collector struct {
	file string
	errs Errors
}

func (c *collector) add(line int, key, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// join returns path.key, or key at the top level.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
