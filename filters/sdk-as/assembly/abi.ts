// The rule ABI v1 exports (hostabi/ABI.md, section 2). A rule's entry file re-exports them:
//
//   export * from "@turnout/rule-sdk/assembly/abi";
//
// Invariant: the host calls these one at a time per instance. Memory: the minimal runtime's
// garbage collector does not run by itself; it runs here, after init and after each decision is
// encoded, when nothing on the stack refers to managed objects (see collectIfAllocated).

import "./host"; // the abort, trace and seed replacements asconfig.json routes the runtime to
import { Event } from "./event";
import { Decision, fail } from "./decision";
import { handler, initHook } from "./rule";
import * as out from "./out";
import { collectIfAllocated, markHeap } from "./gc";

/** The ABI version this SDK speaks. */
// @ts-ignore: decorator
@inline const ABI_VERSION: i32 = 1;

// The ABI buffer: a managed ArrayBuffer, so data() can be a view of it; the garbage collector
// does not move objects.
let abiBuf: ArrayBuffer = new ArrayBuffer(0);
const ev = new Event();

export function turnout_abi_version(): i32 {
  return ABI_VERSION;
}

// @ts-ignore: decorator
@inline const BUFFER_MAX: u32 = 1 << 30;

export function turnout_buffer(size: u32): usize {
  if (size > <u32>abiBuf.byteLength) {
    if (size > BUFFER_MAX) throw new Error("turnout_buffer: a message over 1 GiB");
    let c: u32 = 4096;
    while (c < size) c <<= 1;
    abiBuf = new ArrayBuffer(<i32>c);
  }
  return changetype<usize>(abiBuf);
}

export function turnout_init(n: u32): u64 {
  let hook = initHook;
  if (hook === null) return 0;
  let config = new Uint8Array(<i32>n);
  memory.copy(config.dataStart, changetype<usize>(abiBuf), n);
  let msg = hook(config);
  let loc: u64 = 0;
  if (msg !== null) loc = out.message(msg.length == 0 ? "init failed" : msg);
  __collect();
  markHeap();
  return loc;
}

export function turnout_decide(n: u32): u64 {
  out.reset();
  let err = ev.parse(abiBuf, changetype<usize>(abiBuf), n);
  let d = err !== null
    ? fail("sdk: " + err)
    : handler === null
      ? fail("sdk: no handler registered (call handle() at the rule's top level)")
      : changetype<(e: Event) => Decision>(handler)(ev);
  let loc = out.finish(d.action, changetype<usize>(d.head), <usize>d.head.byteLength);
  collectIfAllocated();
  return loc;
}
