// Host imports (hostabi/ABI.md, section 6) and the replacements for the AssemblyScript runtime's
// own imports (env.abort, env.trace, env.seed), which a turnout host refuses. asconfig.json routes
// them here with --use abort=__turnout_abort, trace=__turnout_trace, seed=__turnout_seed.
//
// Invariant: __turnout_abort does not allocate (it may be called by the allocator itself, out of
// memory) and never returns.

/** turnout.log: writes a UTF-8 message to the host log at a slog level. */
// @ts-ignore: decorator
@external("turnout", "log")
export declare function hostLog(level: i32, ptr: usize, len: usize): void;

/** turnout.now_unix_nano: the wall clock; only for rules granted the clock. */
// @ts-ignore: decorator
@external("turnout", "now_unix_nano")
export declare function hostNowUnixNano(): i64;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "fd_write")
declare function fdWrite(fd: u32, iovs: usize, iovsLen: u32, written: usize): u32;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "random_get")
declare function randomGet(buf: usize, len: usize): u16;

// A static scratch area for the abort message: [iovec 8 bytes][written 4 bytes][text].
// @ts-ignore: decorator
@lazy const SCRATCH: usize = memory.data(1024);
// @ts-ignore: decorator
@inline const TEXT: usize = 12;
// @ts-ignore: decorator
@inline const TEXT_END: usize = 1024;

/** Appends the UTF-16 string at s (may be 0) as UTF-8 at pos, as far as the scratch area goes. */
function putStr(pos: usize, s: usize): usize {
  if (s == 0) return pos;
  let n = <usize>changetype<string>(s).length;
  for (let i: usize = 0; i < n; i++) {
    let c = <u32>load<u16>(s + (i << 1));
    let need: usize = c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
    if (pos + need > TEXT_END - 1) break;
    if (c < 0x80) {
      store<u8>(SCRATCH + pos, c);
    } else if (c < 0x800) {
      store<u8>(SCRATCH + pos, 0xC0 | (c >> 6));
      store<u8>(SCRATCH + pos + 1, 0x80 | (c & 0x3F));
    } else { // surrogate halves come out as WTF-8: enough for a message
      store<u8>(SCRATCH + pos, 0xE0 | (c >> 12));
      store<u8>(SCRATCH + pos + 1, 0x80 | ((c >> 6) & 0x3F));
      store<u8>(SCRATCH + pos + 2, 0x80 | (c & 0x3F));
    }
    pos += need;
  }
  return pos;
}

function putASCII(pos: usize, s: string): usize {
  return putStr(pos, changetype<usize>(s));
}

function putU32(pos: usize, v: u32): usize {
  let digits = 1;
  for (let t = v; t >= 10; t /= 10) digits++;
  if (pos + <usize>digits > TEXT_END - 1) return pos;
  for (let i = digits - 1; i >= 0; i--) {
    store<u8>(SCRATCH + pos + <usize>i, 0x30 + v % 10);
    v /= 10;
  }
  return pos + <usize>digits;
}

/**
 * Replaces env.abort, which `throw`, failed assertions, out-of-bounds array accesses and running
 * out of memory call: writes "abort: <message> (<file>:<line>:<column>)" to stderr, which the host
 * quotes in the error of the failed call (as it does a Go rule's panic), then traps.
 */
// @ts-ignore: decorator
@global
export function __turnout_abort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  let pos = putASCII(TEXT, "abort: ");
  pos = putStr(pos, changetype<usize>(message));
  if (fileName !== null) {
    pos = putASCII(pos, " (");
    pos = putStr(pos, changetype<usize>(fileName));
    pos = putASCII(pos, ":");
    pos = putU32(pos, line);
    pos = putASCII(pos, ":");
    pos = putU32(pos, column);
    pos = putASCII(pos, ")");
  }
  store<u8>(SCRATCH + pos, 0x0A);
  pos++;
  store<u32>(SCRATCH, SCRATCH + TEXT);
  store<u32>(SCRATCH + 4, <u32>(pos - TEXT));
  fdWrite(2, SCRATCH, 1, SCRATCH + 8);
  unreachable();
}

/** Replaces env.trace: trace(message, n, a0..a4) logs at debug level. */
// @ts-ignore: decorator
@global
export function __turnout_trace(message: string, n: i32 = 0, a0: f64 = 0, a1: f64 = 0, a2: f64 = 0, a3: f64 = 0, a4: f64 = 0): void {
  let s = "trace: " + message;
  if (n > 0) s += " " + a0.toString();
  if (n > 1) s += " " + a1.toString();
  if (n > 2) s += " " + a2.toString();
  if (n > 3) s += " " + a3.toString();
  if (n > 4) s += " " + a4.toString();
  logString(-4, s);
}

/** Replaces env.seed (Math.random's seed) with WASI random_get. */
// @ts-ignore: decorator
@global
export function __turnout_seed(): f64 {
  let p = SCRATCH + 8;
  randomGet(p, 8);
  return <f64>(load<u64>(p) >>> 11) + 1.0;
}

// A reusable UTF-8 buffer for log messages (unmanaged memory, grown as needed).
let logBuf: usize = 0;
let logCap: usize = 0;

/** Encodes msg as UTF-8 and hands it to turnout.log. Allocates only when a message is longer than any before. */
export function logString(level: i32, msg: string): void {
  let n = <usize>String.UTF8.byteLength(msg);
  if (n > logCap) {
    if (logBuf != 0) heap.free(logBuf);
    logCap = max<usize>(n, 256);
    logBuf = heap.alloc(logCap);
  }
  String.UTF8.encodeUnsafe(changetype<usize>(msg), msg.length, logBuf);
  hostLog(level, logBuf, n);
}
