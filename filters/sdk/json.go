package sdk

// JSONField returns the value at a dotted path in the JSON document data, without allocating
// and without encoding/json (which costs tens of microseconds per event in a Wasm guest).
//
// Path segments are object keys, or decimal indexes into arrays: "a.b", "items.0.id". Keys are
// compared byte for byte with the raw key text (keys containing escapes or dots cannot be
// addressed). The result is a view into data: for a string, the text between the quotes with
// escape sequences left as they are; for any other value (number, true, false, null, object,
// array), its JSON text. ok is false when the path does not exist or data is not valid enough to
// walk.
func JSONField(data []byte, path string) (value []byte, ok bool) {
	i := skipWS(data, 0)
	for {
		seg := path
		rest := ""
		for j := 0; j < len(path); j++ {
			if path[j] == '.' {
				seg, rest = path[:j], path[j+1:]
				break
			}
		}
		if path == "" {
			break
		}
		if i >= len(data) {
			return nil, false
		}
		var found bool
		switch data[i] {
		case '{':
			i, found = findKey(data, i, seg)
		case '[':
			i, found = findIndex(data, i, seg)
		}
		if !found {
			return nil, false
		}
		path = rest
		if rest == "" {
			break
		}
	}
	end := skipValue(data, i)
	if end < 0 {
		return nil, false
	}
	if data[i] == '"' {
		return data[i+1 : end-1], true
	}
	return data[i:end], true
}

func skipWS(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// findKey scans the object at d[i] for key; it returns the start of its value.
func findKey(d []byte, i int, key string) (int, bool) {
	i = skipWS(d, i+1)
	for i < len(d) && d[i] == '"' {
		end := skipString(d, i)
		if end < 0 {
			return 0, false
		}
		k := d[i+1 : end-1]
		i = skipWS(d, end)
		if i >= len(d) || d[i] != ':' {
			return 0, false
		}
		i = skipWS(d, i+1)
		if string(k) == key {
			return i, i < len(d)
		}
		if i = skipValue(d, i); i < 0 {
			return 0, false
		}
		i = skipWS(d, i)
		if i < len(d) && d[i] == ',' {
			i = skipWS(d, i+1)
		}
	}
	return 0, false
}

// findIndex returns the start of element seg (decimal) of the array at d[i].
func findIndex(d []byte, i int, seg string) (int, bool) {
	n := 0
	if seg == "" || len(seg) > 9 {
		return 0, false
	}
	for j := 0; j < len(seg); j++ {
		if seg[j] < '0' || seg[j] > '9' {
			return 0, false
		}
		n = n*10 + int(seg[j]-'0')
	}
	i = skipWS(d, i+1)
	for k := 0; i < len(d) && d[i] != ']'; k++ {
		if k == n {
			return i, true
		}
		if i = skipValue(d, i); i < 0 {
			return 0, false
		}
		i = skipWS(d, i)
		if i < len(d) && d[i] == ',' {
			i = skipWS(d, i+1)
		}
	}
	return 0, false
}

// skipString returns the index after the string starting at d[i] (a quote), or -1.
func skipString(d []byte, i int) int {
	for i++; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at d[i], or -1.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		return skipString(d, i)
	case '{', '[':
		depth := 0
		for ; i < len(d); i++ {
			switch d[i] {
			case '"':
				e := skipString(d, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(d) {
		c := d[j]
		if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		j++
	}
	if j == i {
		return -1
	}
	return j
}
