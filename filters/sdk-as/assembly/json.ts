// Minimal JSON reading for rules: jsonField reads a field of event data without a JSON library,
// JSONEach, jsonString and jsonStrings read a rule's configuration strictly. They behave as the
// Go SDK's JSONField, JSONEach, JSONString and JSONStrings (filters/sdk/json.go), with the same
// error messages, so a rule ported between the SDKs refuses a configuration the same way.

function isWS(c: u8): bool {
  return c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D;
}

function skipWS(d: Uint8Array, i: i32): i32 {
  while (i < d.length && isWS(unchecked(d[i]))) i++;
  return i;
}

/** The index after the string starting at d[i] (a quote), or -1. */
function skipString(d: Uint8Array, i: i32): i32 {
  for (i++; i < d.length; i++) {
    let c = unchecked(d[i]);
    if (c == 0x5C) i++;
    else if (c == 0x22) return i + 1;
  }
  return -1;
}

/** The index after the value starting at d[i], or -1. */
function skipValue(d: Uint8Array, i: i32): i32 {
  if (i >= d.length) return -1;
  let c = unchecked(d[i]);
  if (c == 0x22) return skipString(d, i);
  if (c == 0x7B || c == 0x5B) {
    let depth = 0;
    for (; i < d.length; i++) {
      let x = unchecked(d[i]);
      if (x == 0x22) {
        let e = skipString(d, i);
        if (e < 0) return -1;
        i = e - 1;
      } else if (x == 0x7B || x == 0x5B) {
        depth++;
      } else if (x == 0x7D || x == 0x5D) {
        depth--;
        if (depth == 0) return i + 1;
      }
    }
    return -1;
  }
  let j = i;
  while (j < d.length) {
    let x = unchecked(d[j]);
    if (x == 0x2C || x == 0x7D || x == 0x5D || isWS(x)) break;
    j++;
  }
  return j == i ? -1 : j;
}

/** The raw key d[from:to] equals the ASCII-or-not string key (compared as UTF-8). */
function keyEquals(d: Uint8Array, from: i32, to: i32, key: string): bool {
  let k = String.UTF8.encode(key);
  if (k.byteLength != to - from) return false;
  return memory.compare(d.dataStart + <usize>from, changetype<usize>(k), <usize>(to - from)) == 0;
}

/** The start of the value of key in the object at d[i], or -1. */
function findKey(d: Uint8Array, i: i32, key: string): i32 {
  i = skipWS(d, i + 1);
  while (i < d.length && unchecked(d[i]) == 0x22) {
    let end = skipString(d, i);
    if (end < 0) return -1;
    let ks = i + 1, ke = end - 1;
    i = skipWS(d, end);
    if (i >= d.length || unchecked(d[i]) != 0x3A) return -1;
    i = skipWS(d, i + 1);
    if (keyEquals(d, ks, ke, key)) return i < d.length ? i : -1;
    i = skipValue(d, i);
    if (i < 0) return -1;
    i = skipWS(d, i);
    if (i < d.length && unchecked(d[i]) == 0x2C) i = skipWS(d, i + 1);
  }
  return -1;
}

/** The start of element seg (decimal) of the array at d[i], or -1. */
function findIndex(d: Uint8Array, i: i32, seg: string): i32 {
  if (seg.length == 0 || seg.length > 9) return -1;
  let n = 0;
  for (let j = 0; j < seg.length; j++) {
    let c = seg.charCodeAt(j);
    if (c < 0x30 || c > 0x39) return -1;
    n = n * 10 + (c - 0x30);
  }
  i = skipWS(d, i + 1);
  for (let k = 0; i < d.length && unchecked(d[i]) != 0x5D; k++) {
    if (k == n) return i;
    i = skipValue(d, i);
    if (i < 0) return -1;
    i = skipWS(d, i);
    if (i < d.length && unchecked(d[i]) == 0x2C) i = skipWS(d, i + 1);
  }
  return -1;
}

/**
 * The value at a dotted path in the JSON document data, or null when the path does not exist or
 * data is not valid enough to walk. Segments are object keys, or decimal indexes into arrays:
 * "a.b", "items.0.id". The result is a view into data: for a string, the text between the
 * quotes with escapes left as they are (jsonString decodes a quoted string); for any other value,
 * its JSON text.
 */
export function jsonField(data: Uint8Array, path: string): Uint8Array | null {
  let i = skipWS(data, 0);
  while (path.length > 0) {
    let dot = path.indexOf(".");
    let seg = dot < 0 ? path : path.substring(0, dot);
    let rest = dot < 0 ? "" : path.substring(dot + 1);
    if (i >= data.length) return null;
    let c = unchecked(data[i]);
    let found = -1;
    if (c == 0x7B) found = findKey(data, i, seg);
    else if (c == 0x5B) found = findIndex(data, i, seg);
    if (found < 0) return null;
    i = found;
    path = rest;
    if (dot < 0) break;
  }
  let end = skipValue(data, i);
  if (end < 0) return null;
  if (unchecked(data[i]) == 0x22) return data.subarray(i + 1, end - 1);
  return data.subarray(i, end);
}

function errJSON(what: string, off: i32): string {
  return "json: " + what + " at byte " + off.toString();
}

/**
 * Walks the members of a JSON object, or the elements of a JSON array, that data holds
 * (surrounding whitespace allowed):
 *
 *   let it = new JSONEach(config);
 *   while (it.next()) { it.key; it.value; }
 *   if (it.error !== null) return it.error;
 *
 * The whole document is checked first (an error then stops the walk before its first member).
 */
export class JSONEach {
  /** What is malformed, as "json: <what> at byte <offset>"; null while all is well. */
  error: string | null = null;
  /** The raw name of the current member (escapes left as they are); null in an array. */
  key: string | null = null;
  /** The raw JSON text of the current value (a string with its quotes): a view into data. */
  value: Uint8Array = new Uint8Array(0);
  /** Whether data is an object (else an array). */
  isObject: bool = false;
  private i: i32 = 0;
  private close: u8 = 0;
  private done: bool = false;
  // A separator error found after the current member, reported by the next call to next().
  private pending: string | null = null;

  constructor(private data: Uint8Array) {
    let i = skipWS(data, 0);
    if (i >= data.length || (unchecked(data[i]) != 0x7B && unchecked(data[i]) != 0x5B)) {
      this.fail(errJSON("want an object or an array", i));
    } else {
      let end = skipValue(data, i);
      if (end < 0 || skipWS(data, end) != data.length) {
        this.fail(errJSON("malformed or trailing data", i));
      } else {
        this.isObject = unchecked(data[i]) == 0x7B;
        this.close = this.isObject ? 0x7D : 0x5D;
        this.i = skipWS(data, i + 1);
      }
    }
  }

  private fail(msg: string): bool {
    this.error = msg;
    this.done = true;
    return false;
  }

  /** Moves to the next member; false at the end or on an error (see error). */
  next(): bool {
    if (this.done) return false;
    let p = this.pending;
    if (p !== null) return this.fail(p);
    let d = this.data;
    let i = this.i;
    if (i >= d.length || unchecked(d[i]) == this.close) {
      this.done = true;
      return false;
    }
    if (this.isObject) {
      if (unchecked(d[i]) != 0x22) return this.fail(errJSON("want a member name", i));
      let end = skipString(d, i);
      this.key = String.UTF8.decodeUnsafe(d.dataStart + <usize>(i + 1), <usize>(end - 1 - (i + 1)));
      i = skipWS(d, end);
      if (i >= d.length || unchecked(d[i]) != 0x3A) return this.fail(errJSON("want ':'", i));
      i = skipWS(d, i + 1);
    }
    let end = skipValue(d, i);
    if (end < 0) return this.fail(errJSON("malformed value", i));
    this.value = d.subarray(i, end);
    i = skipWS(d, end);
    if (i < d.length && unchecked(d[i]) == 0x2C) {
      i = skipWS(d, i + 1);
    } else if (i < d.length && unchecked(d[i]) != this.close) {
      // The member is complete: like the Go SDK, hand it over, then report the error.
      this.pending = errJSON("want ',' or the end", i);
    }
    this.i = i;
    return true;
  }
}

function hex4(raw: Uint8Array, i: i32): i32 {
  if (i + 4 > raw.length - 1) return -1;
  let r = 0;
  for (let k = i; k < i + 4; k++) {
    let h = <i32>unchecked(raw[k]);
    if (h >= 0x30 && h <= 0x39) r = (r << 4) | (h - 0x30);
    else if (h >= 0x61 && h <= 0x66) r = (r << 4) | (h - 0x61 + 10);
    else if (h >= 0x41 && h <= 0x46) r = (r << 4) | (h - 0x41 + 10);
    else return -1;
  }
  return r;
}

function putRune(b: Uint8Array, n: i32, r: i32): i32 {
  if (r >= 0xD800 && r <= 0xDFFF) r = 0xFFFD;
  if (r < 0x80) {
    b[n++] = <u8>r;
  } else if (r < 0x800) {
    b[n++] = <u8>(0xC0 | (r >> 6));
    b[n++] = <u8>(0x80 | (r & 0x3F));
  } else if (r < 0x10000) {
    b[n++] = <u8>(0xE0 | (r >> 12));
    b[n++] = <u8>(0x80 | ((r >> 6) & 0x3F));
    b[n++] = <u8>(0x80 | (r & 0x3F));
  } else {
    b[n++] = <u8>(0xF0 | (r >> 18));
    b[n++] = <u8>(0x80 | ((r >> 12) & 0x3F));
    b[n++] = <u8>(0x80 | ((r >> 6) & 0x3F));
    b[n++] = <u8>(0x80 | (r & 0x3F));
  }
  return n;
}

/**
 * Decodes raw, the JSON text of a string value as JSONEach returns it (quotes included), or
 * returns null when raw is not a valid JSON string.
 */
export function jsonString(raw: Uint8Array): string | null {
  let len = raw.length;
  if (len < 2 || unchecked(raw[0]) != 0x22 || unchecked(raw[len - 1]) != 0x22 || skipString(raw, 0) != len) return null;
  // Escapes never decode to more bytes than they take (\uXXXX is 6 bytes for at most 3; a
  // surrogate pair 12 for 4).
  let b = new Uint8Array(len);
  let n = 0;
  for (let i = 1; i < len - 1; i++) {
    let c = unchecked(raw[i]);
    if (c < 0x20) return null;
    if (c != 0x5C) {
      b[n++] = c;
      continue;
    }
    i++;
    let e = unchecked(raw[i]);
    if (e == 0x22 || e == 0x5C || e == 0x2F) b[n++] = e;
    else if (e == 0x62) b[n++] = 0x08;
    else if (e == 0x66) b[n++] = 0x0C;
    else if (e == 0x6E) b[n++] = 0x0A;
    else if (e == 0x72) b[n++] = 0x0D;
    else if (e == 0x74) b[n++] = 0x09;
    else if (e == 0x75) {
      let r = hex4(raw, i + 1);
      if (r < 0) return null;
      i += 4;
      if (r >= 0xD800 && r < 0xDC00 && i + 2 < len && unchecked(raw[i + 1]) == 0x5C && unchecked(raw[i + 2]) == 0x75) {
        let r2 = hex4(raw, i + 3);
        if (r2 >= 0xDC00 && r2 <= 0xDFFF) {
          r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
          i += 6;
        }
      }
      n = putRune(b, n, r);
    } else {
      return null;
    }
  }
  return String.UTF8.decodeUnsafe(b.dataStart, <usize>n);
}

/**
 * Decodes raw, the JSON text of an array of strings, appending each to out. Returns null, or
 * what is wrong ("json: ... at byte N").
 */
export function jsonStrings(raw: Uint8Array, out: string[]): string | null {
  let it = new JSONEach(raw);
  while (it.next()) {
    if (it.key !== null) return errJSON("want an array, got an object", 0);
    let s = jsonString(it.value);
    if (s === null) return errJSON("want a string, got " + String.UTF8.decodeUnsafe(it.value.dataStart, <usize>it.value.length), 0);
    out.push(s);
  }
  if (it.error !== null) return it.error;
  if (raw.length > 0 && unchecked(raw[skipWS(raw, 0)]) != 0x5B) return errJSON("want an array", 0);
  return null;
}

/** s in double quotes, with quotes, backslashes and control characters escaped (Go's strconv.Quote, for ASCII and printable text). */
export function quote(s: string): string {
  let r = "\"";
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c == 0x22) r += "\\\"";
    else if (c == 0x5C) r += "\\\\";
    else if (c == 0x0A) r += "\\n";
    else if (c == 0x0D) r += "\\r";
    else if (c == 0x09) r += "\\t";
    else if (c < 0x20 || c == 0x7F) r += "\\x" + (c < 0x10 ? "0" : "") + c.toString(16);
    else r += String.fromCharCode(c);
  }
  return r + "\"";
}
