// The output region: the mutations a handler records, then the decision (or an init error
// message) the host reads back (hostabi/ABI.md, sections 3 and 4).
//
// Layout: unmanaged memory [base, base+cap). Mutations are appended from base+GAP; the decision
// header (action, outputs, reason, mutation count), whose size is known only once the handler
// returns, is then written just before them, so a decision is never copied unless its header is
// longer than GAP. The region is reused for every call; it is not garbage-collected.

// @ts-ignore: decorator
@inline export const GAP: usize = 1024;

export let base: usize = 0;
let cap: usize = 0;
/** The end of what was written so far (an offset from base). */
export let pos: usize = GAP;
/** The number of mutations appended since reset. */
export let count: u32 = 0;

/** Starts a new call: no mutations. */
export function reset(): void {
  pos = GAP;
  count = 0;
}

/** Makes room for n more bytes at pos. */
export function reserve(n: usize): void {
  let need = pos + n;
  if (need <= cap) return;
  let c = max<usize>(cap << 1, 4096);
  while (c < need) c <<= 1;
  base = base == 0 ? heap.alloc(c) : heap.realloc(base, c);
  cap = c;
}

export function putU8(v: u8): void {
  reserve(1);
  store<u8>(base + pos, v);
  pos += 1;
}

/** Appends a str: u32 length, then the UTF-8 bytes of s. */
export function putStr(s: string): void {
  let n = <usize>String.UTF8.byteLength(s);
  reserve(4 + n);
  store<u32>(base + pos, <u32>n);
  String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, base + pos + 4);
  pos += 4 + n;
}

/** Appends a str of n bytes copied from ptr. */
export function putBytes(ptr: usize, n: usize): void {
  reserve(4 + n);
  store<u32>(base + pos, <u32>n);
  memory.copy(base + pos + 4, ptr, n);
  pos += 4 + n;
}

/** Appends one mutation: u8 op, str name, str value. */
export function mutation(op: u8, name: string, value: string): void {
  putU8(op);
  putStr(name);
  putStr(value);
  count++;
}

/** Appends a set-data mutation (op 5, empty name) with n bytes from ptr. */
export function setData(ptr: usize, n: usize): void {
  putU8(5);
  reserve(4);
  store<u32>(base + pos, 0);
  pos += 4;
  putBytes(ptr, n);
  count++;
}

/** Packs a location: ptr << 32 | len. */
// @ts-ignore: decorator
@inline export function location(ptr: usize, len: usize): u64 {
  return (<u64>ptr << 32) | <u64>len;
}

/**
 * Writes the decision header (action, then head: the pre-encoded outputs and reason) followed by
 * the mutation count before the mutations and returns the decision's location.
 */
export function finish(action: u8, head: usize, headLen: usize): u64 {
  reserve(0);
  let h: usize = 1 + headLen + 4;
  if (h > GAP) { // a header this long (many outputs, a long reason) moves the mutations up
    let shift: usize = (h - GAP + 7) & ~(<usize>7);
    reserve(shift);
    memory.copy(base + GAP + shift, base + GAP, pos - GAP);
    pos += shift;
    return finishAt(GAP + shift - h, action, head, headLen);
  }
  return finishAt(GAP - h, action, head, headLen);
}

function finishAt(at: usize, action: u8, head: usize, headLen: usize): u64 {
  let p = base + at;
  store<u8>(p, action);
  memory.copy(p + 1, head, headLen);
  store<u32>(p + 1 + headLen, count);
  return location(p, pos - at);
}

/** Writes msg (UTF-8) at the start of the region and returns its location: an init refusal. */
export function message(msg: string): u64 {
  let n = <usize>String.UTF8.byteLength(msg);
  pos = 0;
  reserve(max<usize>(n, 1));
  String.UTF8.encodeUnsafe(changetype<usize>(msg), msg.length, base);
  pos = GAP;
  return location(base, n);
}
