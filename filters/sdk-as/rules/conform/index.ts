// The ABI conformance rule, in AssemblyScript: the same behaviour as the Go SDK's conform rule
// (filters/sdk/testdata/conform), decided by the event's type. hostabi/conformance_test.go runs
// every SDK's build through the real host and compares each decision with one golden file.

import {
  Event, Decision, handle, onInit, drop, route, routeMany, fail, log, LEVEL_INFO,
  JSONEach, jsonString, quote,
} from "../../assembly";
export * from "../../assembly/abi";

let tag = "";

function configure(raw: Uint8Array): string | null {
  if (raw.length == 0) return null;
  let refuse: string | null = null;
  let seen = false;
  let it = new JSONEach(raw);
  while (it.next()) {
    let key = it.key;
    if (key === null || seen) return "conform config: want an object with one key";
    seen = true;
    let s = jsonString(it.value);
    if (s === null) return "conform config: " + key + ": want a string";
    if (key == "tag") tag = s;
    else if (key == "refuse") refuse = s;
    else return "conform config: unknown key " + quote(key);
  }
  if (it.error !== null) return "conform config: " + it.error!;
  return refuse;
}

let sink = 0;

function join(parts: string[], sep: string): string {
  return parts.join(sep);
}

function decide(e: Event): Decision {
  let t = e.type;
  if (t == "conform.drop") return drop();
  if (t == "conform.route") return route("a");
  if (t == "conform.fanout") return routeMany(["a", "b", "c"]);
  if (t == "conform.fail") return fail("failed: " + e.subject);
  if (t == "conform.echo") {
    e.setExtension("seen", e.id);
    e.setExtension("next", e.extensionCount.toString());
    e.setExtension("datalen", e.hasData ? e.dataLength.toString() : "none");
    e.setExtension("tag", tag);
    return route("a");
  }
  if (t == "conform.attrs") {
    e.setExtension("all", join([e.id, e.source, e.specversion, e.type, e.datacontenttype, e.dataschema, e.subject, e.time], "|"));
    let exts = new Array<string>(0);
    for (let i = 0; i < e.extensionCount; i++) exts.push(e.extensionName(i) + "=" + e.extensionValue(i));
    exts.sort((a: string, b: string): i32 => a < b ? -1 : a > b ? 1 : 0);
    e.setExtension("exts", join(exts, ";"));
    return route("a");
  }
  if (t == "conform.mutate") {
    e.setAttribute("id", "new-id");
    e.setAttribute("source", "/new");
    e.setAttribute("type", "conform.mutated");
    e.setAttribute("subject", "ß-subject ✓");
    e.setAttribute("time", "2026-01-02T03:04:05Z");
    e.setAttribute("datacontenttype", "text/plain");
    e.setAttribute("dataschema", "https://example.org/s");
    e.removeExtension("x");
    e.setExtension("added", "ü");
    let prefix = String.UTF8.encode("mutated: ");
    let data = e.data;
    let d = new Uint8Array(prefix.byteLength + data.length);
    d.set(Uint8Array.wrap(prefix), 0);
    d.set(data, prefix.byteLength);
    e.setData(d);
    return route("a");
  }
  if (t == "conform.remove") {
    e.removeAttribute("subject");
    e.removeAttribute("time");
    e.removeAttribute("datacontenttype");
    e.removeAttribute("dataschema");
    return route("a");
  }
  if (t == "conform.log") {
    log(LEVEL_INFO, "conform log: " + e.id);
    return drop();
  }
  if (t == "conform.trap") throw new Error("conform: trap requested");
  if (t == "conform.loop") {
    while (true) sink++;
  }
  if (t == "conform.badoutput") return route("nope");
  return route("default");
}

onInit(configure);
handle(decide);
