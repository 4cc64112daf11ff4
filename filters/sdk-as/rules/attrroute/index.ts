// attrroute, the stock turnout rule, in AssemblyScript: the same behaviour and configuration
// errors as the Go build (filters/rules/attrroute). It routes an event by matching its context
// attributes or extensions against a list of filters, in the manner of the CloudEvents
// Subscriptions API's exact, prefix and suffix filter dialects.
//
// Configuration (the route's rule config, JSON):
//
//   {
//     "match": "first",                     // "first" (default): the first matching filter wins;
//                                           // "all": the union of every matching filter's outputs
//     "filters": [
//       {"attribute": "type", "prefix": "alarm.", "outputs": ["urgent"]},
//       {"attribute": "region", "exact": "north", "outputs": ["north"]}
//     ],
//     "default": ["archive"]                // outputs when nothing matches; absent or [] = drop
//   }
//
// Each filter names one attribute (a context attribute such as type, source or subject, or an
// extension) and exactly one of exact, prefix or suffix. An absent attribute never matches.
//
// Invariant: the decision depends only on the event and the configuration; the rule never fails
// an event once its configuration was accepted. Matching does not allocate: filter values are
// kept as UTF-8 and compared with the event's bytes, and decisions are made once.

import {
  Event, Decision, Utf8, handle, onInit, drop, routeMany, JSONEach, jsonString, jsonStrings, quote,
} from "../../assembly";
export * from "../../assembly/abi";

// @ts-ignore: decorator
@inline const EXACT: u8 = 0x65; // 'e'
// @ts-ignore: decorator
@inline const PREFIX: u8 = 0x70; // 'p'

class Filter {
  attribute: string = "";
  kind: u8 = 0;
  value: Utf8 = new Utf8("");
  outputs: string[] = [];
  route: Decision = drop();

  matches(e: Event): bool {
    if (this.kind == EXACT) return e.attributeEquals(this.attribute, this.value);
    if (this.kind == PREFIX) return e.hasPrefix(this.attribute, this.value);
    return e.hasSuffix(this.attribute, this.value);
  }
}

let matchAll = false;
let filters: Filter[] = [];
let fallback: Decision = drop();
let union: string[] = [];

// The filter parseFilter returns along with a null error.
let parsed: Filter | null = null;

// parse reads the configuration strictly: unknown keys and wrong types are errors.
function parse(raw: Uint8Array): string | null {
  let err = parseConfig(raw);
  return err === null ? null : "attrroute config: " + err;
}

function parseConfig(raw: Uint8Array): string | null {
  let all = false;
  let fs: Filter[] = [];
  let defaults: string[] = [];
  let seen: string[] = [];
  let it = new JSONEach(raw);
  while (it.next()) {
    let k = uniqueKey(it, seen);
    if (k === null) return "want an object with each key once";
    let v = it.value;
    if (k == "match") {
      let m = jsonString(v);
      if (m === null || (m != "first" && m != "all")) return "match " + text(v) + ": want \"first\" or \"all\"";
      all = m == "all";
    } else if (k == "filters") {
      let fi = new JSONEach(v);
      let i = 0;
      while (fi.next()) {
        if (fi.key !== null) return "filters: want an array";
        let ferr = parseFilter(fi.value);
        if (ferr !== null) return "filters[" + i.toString() + "]: " + ferr;
        fs.push(changetype<Filter>(parsed));
        i++;
      }
      if (fi.error !== null) return fi.error;
    } else if (k == "default") {
      let d: string[] = [];
      let derr = jsonStrings(v, d);
      if (derr !== null) return "default: " + derr;
      defaults = d;
    } else {
      return "unknown key " + quote(k);
    }
  }
  if (it.error !== null) return it.error;
  if (fs.length == 0) return "filters: at least one filter is required";
  matchAll = all;
  filters = fs;
  fallback = defaults.length > 0 ? routeMany(defaults) : drop();
  return null;
}

function parseFilter(raw: Uint8Array): string | null {
  let f = new Filter();
  let kinds = 0;
  let seen: string[] = [];
  let it = new JSONEach(raw);
  while (it.next()) {
    let k = uniqueKey(it, seen);
    if (k === null) return "want an object with each key once";
    let v = it.value;
    if (k == "attribute" || k == "exact" || k == "prefix" || k == "suffix") {
      let s = jsonString(v);
      if (s === null) return k + ": want a string, got " + text(v);
      if (k == "attribute") {
        f.attribute = s;
      } else {
        kinds++;
        f.kind = <u8>k.charCodeAt(0);
        f.value = new Utf8(s);
      }
    } else if (k == "outputs") {
      let o: string[] = [];
      let oerr = jsonStrings(v, o);
      if (oerr !== null) return "outputs: " + oerr;
      f.outputs = o;
    } else {
      return "unknown key " + quote(k);
    }
  }
  if (it.error !== null) return it.error;
  if (f.attribute.length == 0) return "attribute is required";
  if (kinds != 1) return "exactly one of exact, prefix, suffix is required";
  if (f.outputs.length == 0) return "outputs: at least one output is required";
  f.route = routeMany(f.outputs);
  parsed = f;
  return null;
}

// uniqueKey returns the current member's name, adding it to seen, or null when the document is
// an array or the name was seen before.
function uniqueKey(it: JSONEach, seen: string[]): string | null {
  let k = it.key;
  if (k === null || seen.includes(k)) return null;
  seen.push(k);
  return k;
}

function text(v: Uint8Array): string {
  return String.UTF8.decodeUnsafe(v.dataStart, <usize>v.length);
}

// In "all" mode, the decision for each set of matching filters (a bit per filter), made when the
// set first matches: after that, deciding allocates nothing. Bounded: sets of more than 64
// filters, and sets beyond the first 1024, get a fresh decision each time.
let byMatches = new Map<u64, Decision>();
// @ts-ignore: decorator
@inline const MAX_CACHED = 1024;

function decide(e: Event): Decision {
  let fs = filters;
  if (!matchAll) {
    for (let i = 0; i < fs.length; i++) {
      let f = unchecked(fs[i]);
      if (f.matches(e)) return f.route;
    }
    return fallback;
  }
  let keyed = fs.length <= 64;
  let set: u64 = 0;
  let any = false;
  for (let i = 0; i < fs.length; i++) {
    if (unchecked(fs[i]).matches(e)) {
      any = true;
      if (keyed) set |= (<u64>1) << i;
    }
  }
  if (!any) return fallback;
  if (keyed && byMatches.has(set)) return byMatches.get(set);
  union.length = 0;
  for (let i = 0; i < fs.length; i++) {
    let f = unchecked(fs[i]);
    if (keyed ? (set & ((<u64>1) << i)) == 0 : !f.matches(e)) continue;
    for (let j = 0; j < f.outputs.length; j++) {
      let o = unchecked(f.outputs[j]);
      if (!union.includes(o)) union.push(o);
    }
  }
  let d = routeMany(union);
  if (keyed && byMatches.size < MAX_CACHED) byMatches.set(set, d);
  return d;
}

onInit(parse);
handle(decide);
