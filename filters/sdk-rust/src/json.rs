//! Minimal JSON reading, enough to read a rule's configuration strictly and a field of an
//! event's JSON data, without a JSON library. The same helpers, with the same error messages,
//! as the Go SDK's `JSONField`, `JSONEach`, `JSONString` and `JSONStrings`.

/// Returns the value at a dotted `path` in the JSON document `data`, without allocating.
///
/// Path segments are object keys, or decimal indexes into arrays: `"a.b"`, `"items.0.id"`. Keys
/// are compared byte for byte with the raw key text (keys containing escapes or dots cannot be
/// addressed). The result is a view into `data`: for a string, the text between the quotes with
/// escape sequences left as they are (decode it with [`string`] on the quoted text if it may
/// hold escapes); for any other value (number, `true`, `false`, `null`, object, array), its JSON
/// text. `None` when the path does not exist or `data` is not valid enough to walk.
pub fn field<'a>(data: &'a [u8], path: &str) -> Option<&'a [u8]> {
    let mut i = skip_ws(data, 0);
    let mut path = path;
    while !path.is_empty() {
        let (seg, rest) = match path.find('.') {
            Some(j) => (&path[..j], &path[j + 1..]),
            None => (path, ""),
        };
        i = match data.get(i)? {
            b'{' => find_key(data, i, seg)?,
            b'[' => find_index(data, i, seg)?,
            _ => return None,
        };
        path = rest;
    }
    let end = skip_value(data, i)?;
    if data[i] == b'"' {
        return Some(&data[i + 1..end - 1]);
    }
    Some(&data[i..end])
}

fn skip_ws(d: &[u8], mut i: usize) -> usize {
    while i < d.len() && matches!(d[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Scans the object at `d[i]` for `key`; returns the start of its value.
fn find_key(d: &[u8], i: usize, key: &str) -> Option<usize> {
    let mut i = skip_ws(d, i + 1);
    while i < d.len() && d[i] == b'"' {
        let end = skip_string(d, i)?;
        let k = &d[i + 1..end - 1];
        i = skip_ws(d, end);
        if i >= d.len() || d[i] != b':' {
            return None;
        }
        i = skip_ws(d, i + 1);
        if k == key.as_bytes() {
            return if i < d.len() { Some(i) } else { None };
        }
        i = skip_ws(d, skip_value(d, i)?);
        if i < d.len() && d[i] == b',' {
            i = skip_ws(d, i + 1);
        }
    }
    None
}

/// Returns the start of element `seg` (decimal) of the array at `d[i]`.
fn find_index(d: &[u8], i: usize, seg: &str) -> Option<usize> {
    if seg.is_empty() || seg.len() > 9 || !seg.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: usize = seg.parse().ok()?;
    let mut i = skip_ws(d, i + 1);
    let mut k = 0;
    while i < d.len() && d[i] != b']' {
        if k == n {
            return Some(i);
        }
        i = skip_ws(d, skip_value(d, i)?);
        if i < d.len() && d[i] == b',' {
            i = skip_ws(d, i + 1);
        }
        k += 1;
    }
    None
}

/// Returns the index after the string starting at `d[i]` (a quote).
fn skip_string(d: &[u8], i: usize) -> Option<usize> {
    let mut i = i + 1;
    while i < d.len() {
        match d[i] {
            b'\\' => i += 1,
            b'"' => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Returns the index after the value starting at `d[i]`.
fn skip_value(d: &[u8], i: usize) -> Option<usize> {
    match *d.get(i)? {
        b'"' => skip_string(d, i),
        b'{' | b'[' => {
            let mut depth = 0;
            let mut i = i;
            while i < d.len() {
                match d[i] {
                    b'"' => i = skip_string(d, i)? - 1,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < d.len() && !matches!(d[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            if j == i {
                None
            } else {
                Some(j)
            }
        }
    }
}

/// A malformed-JSON error: `json: <what> at byte <offset>`.
pub fn error(what: &str, offset: usize) -> String {
    format!("json: {what} at byte {offset}")
}

/// Calls `f` for every member of the JSON object, or every element of the JSON array, that
/// `data` holds (surrounding whitespace allowed). For an object, `key` is the raw member name
/// (without quotes, escapes left as they are); for an array, `key` is `None`. `value` is the
/// member's raw JSON text, quotes included for strings (see [`string`]). Stops at, and returns,
/// `f`'s first error. Meant for reading a rule's configuration in [`Rule::init`](crate::Rule::init).
pub fn each<F>(data: &[u8], mut f: F) -> Result<(), String>
where
    F: FnMut(Option<&[u8]>, &[u8]) -> Result<(), String>,
{
    let mut i = skip_ws(data, 0);
    let close = match data.get(i) {
        Some(b'{') => b'}',
        Some(b'[') => b']',
        _ => return Err(error("want an object or an array", i)),
    };
    match skip_value(data, i) {
        Some(end) if skip_ws(data, end) == data.len() => {}
        _ => return Err(error("malformed or trailing data", i)),
    }
    let obj = close == b'}';
    i = skip_ws(data, i + 1);
    while i < data.len() && data[i] != close {
        let mut key = None;
        if obj {
            if data[i] != b'"' {
                return Err(error("want a member name", i));
            }
            let end = skip_string(data, i).ok_or_else(|| error("want a member name", i))?;
            key = Some(&data[i + 1..end - 1]);
            i = skip_ws(data, end);
            if i >= data.len() || data[i] != b':' {
                return Err(error("want ':'", i));
            }
            i = skip_ws(data, i + 1);
        }
        let end = skip_value(data, i).ok_or_else(|| error("malformed value", i))?;
        f(key, &data[i..end])?;
        i = skip_ws(data, end);
        if i < data.len() && data[i] == b',' {
            i = skip_ws(data, i + 1);
        } else if i < data.len() && data[i] != close {
            return Err(error("want ',' or the end", i));
        }
    }
    Ok(())
}

/// Decodes `raw`, the JSON text of a string value as [`each`] returns it (quotes included).
/// `None` when `raw` is not a valid JSON string holding UTF-8 text. A lone surrogate escape
/// decodes to U+FFFD.
pub fn string(raw: &[u8]) -> Option<String> {
    if raw.len() < 2 || raw[0] != b'"' || raw[raw.len() - 1] != b'"' || skip_string(raw, 0) != Some(raw.len()) {
        return None;
    }
    let body = &raw[1..raw.len() - 1];
    let mut b: Vec<u8> = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c < 0x20 {
            return None;
        }
        if c != b'\\' {
            b.push(c);
            i += 1;
            continue;
        }
        i += 1;
        match body[i] {
            c @ (b'"' | b'\\' | b'/') => b.push(c),
            b'b' => b.push(8),
            b'f' => b.push(12),
            b'n' => b.push(b'\n'),
            b'r' => b.push(b'\r'),
            b't' => b.push(b'\t'),
            b'u' => {
                let mut r = hex4(body, i + 1)?;
                i += 4;
                if (0xD800..0xDC00).contains(&r) && body.get(i + 1) == Some(&b'\\') && body.get(i + 2) == Some(&b'u') {
                    if let Some(r2) = hex4(body, i + 3) {
                        if (0xDC00..0xE000).contains(&r2) {
                            r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
                            i += 6;
                        }
                    }
                }
                let ch = char::from_u32(r).unwrap_or('\u{FFFD}');
                let mut enc = [0; 4];
                b.extend_from_slice(ch.encode_utf8(&mut enc).as_bytes());
            }
            _ => return None,
        }
        i += 1;
    }
    String::from_utf8(b).ok()
}

/// Reads the 4 hex digits of a `\u` escape at `body[i..i + 4]`.
fn hex4(body: &[u8], i: usize) -> Option<u32> {
    let digits = body.get(i..i + 4)?;
    let mut r = 0;
    for &h in digits {
        r = r << 4 | (h as char).to_digit(16)?;
    }
    Some(r)
}

/// Decodes `raw`, the JSON text of an array of strings.
pub fn strings(raw: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    each(raw, |key, v| {
        if key.is_some() {
            return Err(error("want an array, got an object", 0));
        }
        match string(v) {
            Some(s) => {
                out.push(s);
                Ok(())
            }
            None => Err(error(&format!("want a string, got {}", String::from_utf8_lossy(v)), 0)),
        }
    })?;
    if raw.get(skip_ws(raw, 0)) != Some(&b'[') {
        return Err(error("want an array", 0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let d = br#" {"a": {"b": [10, "x\"y", {"c": true}]}, "s": "plain"} "#;
        assert_eq!(field(d, "a.b.0"), Some(&b"10"[..]));
        assert_eq!(field(d, "a.b.1"), Some(&br#"x\"y"#[..]));
        assert_eq!(field(d, "a.b.2.c"), Some(&b"true"[..]));
        assert_eq!(field(d, "s"), Some(&b"plain"[..]));
        assert_eq!(field(d, "a.b.3"), None);
        assert_eq!(field(d, "a.z"), None);
        assert_eq!(field(b"{\"a\":", "a"), None);
    }

    #[test]
    fn each_errors() {
        let ok = |_: Option<&[u8]>, _: &[u8]| Ok(());
        assert_eq!(each(br#"{"filters":"#, ok), Err("json: malformed or trailing data at byte 0".into()));
        assert_eq!(each(b"1", ok), Err("json: want an object or an array at byte 0".into()));
        assert_eq!(each(br#"{"a" 1}"#, ok), Err("json: want ':' at byte 5".into()));
        assert_eq!(each(b"{1:2}", ok), Err("json: want a member name at byte 1".into()));
        let mut seen = Vec::new();
        each(br#"{"a":1, "b" : [2]}"#, |k, v| {
            seen.push((k.map(|k| k.to_vec()), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(Some(b"a".to_vec()), b"1".to_vec()), (Some(b"b".to_vec()), b"[2]".to_vec())]);
    }

    #[test]
    fn strings_decode() {
        assert_eq!(string(br#""a\"\\\n\u00fc\ud83d\ude00\/""#).as_deref(), Some("a\"\\\nü😀/"));
        assert_eq!(string(br#""\ud800x""#).as_deref(), Some("\u{FFFD}x"));
        assert_eq!(string(br#""\x""#), None);
        assert_eq!(string(b"\"a\nb\""), None);
        assert_eq!(string(b"1"), None);
        assert_eq!(strings(br#"["a", "b"]"#), Ok(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(strings(b"[1]"), Err("json: want a string, got 1 at byte 0".into()));
        assert_eq!(strings(b"{}"), Err("json: want an array at byte 0".into()));
    }
}
