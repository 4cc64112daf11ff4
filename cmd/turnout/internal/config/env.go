package config

import (
	"strings"
)

// expandEnv replaces ${NAME} and ${NAME:-default} in the raw configuration text, line by line so
// that errors can name the line. "$${" stands for a literal "${". Lines whose first non-blank
// character is '#' are comments and are left alone, so a commented-out ${VAR} needs no value.
// NAME is [A-Za-z_][A-Za-z0-9_]*. A variable that is set but empty counts as unset for the
// ":-" form, as in the shell. Values are inserted verbatim: a value containing a newline shifts
// the line numbers of everything after it.
func expandEnv(c *collector, text string, lookup func(string) (string, bool)) string {
	if !strings.Contains(text, "${") {
		return text
	}
	lines := strings.SplitAfter(text, "\n")
	var out strings.Builder
	out.Grow(len(text))
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") || !strings.Contains(line, "${") {
			out.WriteString(line)
			continue
		}
		out.WriteString(expandLine(c, i+1, line, lookup))
	}
	return out.String()
}

func expandLine(c *collector, lineNo int, line string, lookup func(string) (string, bool)) string {
	var out strings.Builder
	for {
		i := strings.Index(line, "${")
		if i < 0 {
			out.WriteString(line)
			return out.String()
		}
		if i > 0 && line[i-1] == '$' {
			// "$${" is an escaped "${".
			out.WriteString(line[:i-1])
			out.WriteString("${")
			line = line[i+2:]
			continue
		}
		out.WriteString(line[:i])
		rest := line[i+2:]
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			c.add(lineNo, "", "unterminated ${ (write $${ for a literal ${)")
			out.WriteString(line[i:])
			return out.String()
		}
		expr := rest[:end]
		line = rest[end+1:]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			c.add(lineNo, "", "invalid environment variable reference ${%s}: want ${NAME} or ${NAME:-default}", expr)
			continue
		}
		v, ok := lookup(name)
		switch {
		case hasDef && (!ok || v == ""):
			out.WriteString(def)
		case ok:
			out.WriteString(v)
		default:
			c.add(lineNo, "", "environment variable %s is not set (use ${%s:-default} to give a default)", name, name)
		}
	}
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
