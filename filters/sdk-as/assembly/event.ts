// The event being decided: a view over the ABI buffer (hostabi/ABI.md, section 4, "Event").
//
// Invariant: one Event exists per instance and the host decides one event at a time. Its spans
// point into the ABI buffer and are valid only during the handler call; parsing and the
// zero-allocation accessors (attributeEquals, hasPrefix, hasSuffix, hasAttribute, lengths) do not
// allocate once the extension table has grown to the largest event seen.

import * as out from "./out";

// @ts-ignore: decorator
@inline export const ABSENT: u32 = 0xFFFFFFFF;

// Attribute indexes, in the order an encoded event carries them.
// @ts-ignore: decorator
@inline const ID = 0;
// @ts-ignore: decorator
@inline const SOURCE = 1;
// @ts-ignore: decorator
@inline const SPECVERSION = 2;
// @ts-ignore: decorator
@inline const TYPE = 3;
// @ts-ignore: decorator
@inline const DATACONTENTTYPE = 4;
// @ts-ignore: decorator
@inline const DATASCHEMA = 5;
// @ts-ignore: decorator
@inline const SUBJECT = 6;
// @ts-ignore: decorator
@inline const TIME = 7;

/** Returns the index of the context attribute called name, or -1 (name may be an extension). */
export function attrIndex(name: string): i32 {
  switch (name.length) {
    case 2: if (name == "id") return ID; break;
    case 4:
      if (name == "type") return TYPE;
      if (name == "time") return TIME;
      break;
    case 6: if (name == "source") return SOURCE; break;
    case 7: if (name == "subject") return SUBJECT; break;
    case 10: if (name == "dataschema") return DATASCHEMA; break;
    case 11: if (name == "specversion") return SPECVERSION; break;
    case 15: if (name == "datacontenttype") return DATACONTENTTYPE; break;
  }
  return -1;
}

/** A string encoded once as UTF-8, to compare event values with it without allocating. */
@final
export class Utf8 {
  readonly bytes: ArrayBuffer;
  constructor(readonly text: string) {
    this.bytes = String.UTF8.encode(text);
  }
  get length(): i32 {
    return this.bytes.byteLength;
  }
}

/** The UTF-8 bytes at p (n of them) equal the ASCII-only UTF-16 string s. */
function asciiEquals(p: usize, n: u32, s: string): bool {
  if (<i32>n != s.length) return false;
  let q = changetype<usize>(s);
  for (let i: usize = 0; i < <usize>n; i++) {
    let c = load<u16>(q + (i << 1));
    if (c >= 0x80 || <u16>load<u8>(p + i) != c) return false;
  }
  return true;
}

@final
export class Event {
  private buf: usize = 0;
  // Absolute address and length of each context attribute; length ABSENT when absent.
  private attrPtr: StaticArray<usize> = new StaticArray<usize>(8);
  private attrLen: StaticArray<u32> = new StaticArray<u32>(8);
  // Extension table (unmanaged): per extension u32 name ptr, name len, value ptr, value len.
  private ext: usize = 0;
  private extCap: u32 = 0;
  private extN: u32 = 0;
  private dataPtr: usize = 0;
  private dataLen: u32 = ABSENT;
  // The span a lookup found.
  private sp: usize = 0;
  private sl: u32 = 0;
  // A managed view of the ABI buffer, for data().
  private abi: ArrayBuffer | null = null;

  /**
   * Indexes the n-byte event at b, inside the managed buffer abi. Returns null, or what is
   * wrong with the encoding (the host never sends a malformed event).
   */
  parse(abi: ArrayBuffer, b: usize, n: u32): string | null {
    this.abi = abi;
    this.buf = b;
    this.extN = 0;
    this.dataLen = ABSENT;
    let end = b + <usize>n;
    if (n < 1) return "event truncated at byte 0";
    if (load<u8>(b) != 1) return "unknown event format version " + load<u8>(b).toString();
    let p = b + 1;
    for (let i = 0; i < 8; i++) {
      if (end - p < 4) return truncated(p - b);
      let l = load<u32>(p);
      p += 4;
      if (l == ABSENT) {
        unchecked(this.attrLen[i] = ABSENT);
        continue;
      }
      if (<usize>l > end - p) return truncated(p - b);
      unchecked(this.attrPtr[i] = p);
      unchecked(this.attrLen[i] = l);
      p += <usize>l;
    }
    if (end - p < 4) return truncated(p - b);
    let count = load<u32>(p);
    p += 4;
    if (<u64>count * 8 > <u64>(end - p)) return truncated(p - b);
    if (count > this.extCap) {
      if (this.ext != 0) heap.free(this.ext);
      this.extCap = max<u32>(count, 16);
      this.ext = heap.alloc(<usize>this.extCap << 4);
    }
    for (let i: u32 = 0; i < count; i++) {
      let t = this.ext + (<usize>i << 4);
      for (let k: usize = 0; k < 2; k++) {
        if (end - p < 4) return truncated(p - b);
        let l = load<u32>(p);
        p += 4;
        if (<usize>l > end - p) return truncated(p - b);
        store<u32>(t + k * 8, <u32>p);
        store<u32>(t + k * 8 + 4, l);
        p += <usize>l;
      }
    }
    this.extN = count;
    if (end - p < 4) return truncated(p - b);
    let dl = load<u32>(p);
    p += 4;
    if (dl != ABSENT) {
      if (<usize>dl > end - p) return truncated(p - b);
      this.dataPtr = p;
      p += <usize>dl;
    }
    this.dataLen = dl;
    if (p != end) return "event has trailing bytes at byte " + (p - b).toString();
    return null;
  }

  private attrString(i: i32): string {
    let l = unchecked(this.attrLen[i]);
    return l == ABSENT ? "" : String.UTF8.decodeUnsafe(unchecked(this.attrPtr[i]), l);
  }

  /** The id attribute. */
  get id(): string { return this.attrString(ID); }
  /** The source attribute. */
  get source(): string { return this.attrString(SOURCE); }
  /** The specversion attribute. */
  get specversion(): string { return this.attrString(SPECVERSION); }
  /** The type attribute. */
  get type(): string { return this.attrString(TYPE); }
  /** The subject attribute, "" when absent. */
  get subject(): string { return this.attrString(SUBJECT); }
  /** The time attribute in RFC 3339 form, "" when absent. */
  get time(): string { return this.attrString(TIME); }
  /** The datacontenttype attribute, "" when absent. */
  get datacontenttype(): string { return this.attrString(DATACONTENTTYPE); }
  /** The dataschema attribute, "" when absent. */
  get dataschema(): string { return this.attrString(DATASCHEMA); }

  /** Finds the context attribute or else the extension called name; sets sp/sl. */
  private find(name: string): bool {
    let i = attrIndex(name);
    if (i >= 0) {
      let l = unchecked(this.attrLen[i]);
      if (l == ABSENT) return false;
      this.sp = unchecked(this.attrPtr[i]);
      this.sl = l;
      return true;
    }
    return this.findExtension(name);
  }

  private findExtension(name: string): bool {
    for (let i: u32 = 0; i < this.extN; i++) {
      let t = this.ext + (<usize>i << 4);
      if (asciiEquals(<usize>load<u32>(t), load<u32>(t + 4), name)) {
        this.sp = <usize>load<u32>(t + 8);
        this.sl = load<u32>(t + 12);
        return true;
      }
    }
    return false;
  }

  /** The context attribute or, when name is not one, the extension called name; null when absent. */
  attribute(name: string): string | null {
    if (!this.find(name)) return null;
    return String.UTF8.decodeUnsafe(this.sp, this.sl);
  }

  /** Whether the event has the context attribute or extension called name. Does not allocate. */
  hasAttribute(name: string): bool {
    return this.find(name);
  }

  /** The value of extension name in its CloudEvents string form; null when absent. */
  extension(name: string): string | null {
    if (!this.findExtension(name)) return null;
    return String.UTF8.decodeUnsafe(this.sp, this.sl);
  }

  /** The attribute or extension called name is present and equals value. Does not allocate. */
  attributeEquals(name: string, value: Utf8): bool {
    if (!this.find(name) || this.sl != <u32>value.length) return false;
    return memory.compare(this.sp, changetype<usize>(value.bytes), this.sl) == 0;
  }

  /** The attribute or extension called name is present and starts with prefix. Does not allocate. */
  hasPrefix(name: string, prefix: Utf8): bool {
    let n = <u32>prefix.length;
    if (!this.find(name) || this.sl < n) return false;
    return memory.compare(this.sp, changetype<usize>(prefix.bytes), n) == 0;
  }

  /** The attribute or extension called name is present and ends with suffix. Does not allocate. */
  hasSuffix(name: string, suffix: Utf8): bool {
    let n = <u32>suffix.length;
    if (!this.find(name) || this.sl < n) return false;
    return memory.compare(this.sp + <usize>(this.sl - n), changetype<usize>(suffix.bytes), n) == 0;
  }

  /** The number of extensions; extensionName(i) and extensionValue(i) return each. */
  get extensionCount(): i32 {
    return <i32>this.extN;
  }

  /** The name of extension i, 0 <= i < extensionCount. */
  extensionName(i: i32): string {
    let t = this.extAt(i);
    return String.UTF8.decodeUnsafe(<usize>load<u32>(t), load<u32>(t + 4));
  }

  /** The value of extension i, 0 <= i < extensionCount. */
  extensionValue(i: i32): string {
    let t = this.extAt(i);
    return String.UTF8.decodeUnsafe(<usize>load<u32>(t + 8), load<u32>(t + 12));
  }

  private extAt(i: i32): usize {
    if (<u32>i >= this.extN) throw new RangeError("extension index out of range");
    return this.ext + (<usize>i << 4);
  }

  /** Whether the event carries data (possibly empty). */
  get hasData(): bool {
    return this.dataLen != ABSENT;
  }

  /** The number of data bytes (0 when the event has none). Does not allocate. */
  get dataLength(): i32 {
    return this.dataLen == ABSENT ? 0 : <i32>this.dataLen;
  }

  /**
   * The event's data bytes (empty when it has none): a view into the ABI buffer, not a copy,
   * valid only until the handler returns (copy it with slice() to keep it).
   */
  get data(): Uint8Array {
    if (this.dataLen == ABSENT || this.dataLen == 0) return new Uint8Array(0);
    let abi = changetype<ArrayBuffer>(this.abi);
    return Uint8Array.wrap(abi, <i32>(this.dataPtr - changetype<usize>(abi)), <i32>this.dataLen);
  }

  /** The event's data decoded as UTF-8 text ("" when it has none). */
  dataString(): string {
    if (this.dataLen == ABSENT) return "";
    return String.UTF8.decodeUnsafe(this.dataPtr, this.dataLen);
  }

  /**
   * Sets a context attribute (id, source, type, subject, time, datacontenttype, dataschema) in
   * the routed event. The host validates the value (time must be RFC 3339).
   */
  setAttribute(name: string, value: string): void {
    out.mutation(1, name, value);
  }

  /** Removes an optional context attribute (subject, time, datacontenttype, dataschema). */
  removeAttribute(name: string): void {
    out.mutation(2, name, "");
  }

  /** Sets extension name (lower-case a-z0-9) to a string value in the routed event. */
  setExtension(name: string, value: string): void {
    out.mutation(3, name, value);
  }

  /** Removes extension name from the routed event. */
  removeExtension(name: string): void {
    out.mutation(4, name, "");
  }

  /** Replaces the routed event's data; datacontenttype is kept unless also set. */
  setData(data: Uint8Array): void {
    out.setData(data.dataStart, <usize>data.byteLength);
  }

  /** Replaces the routed event's data with the UTF-8 bytes of text. */
  setDataString(text: string): void {
    let b = String.UTF8.encode(text);
    out.setData(changetype<usize>(b), <usize>b.byteLength);
  }
}

function truncated(at: usize): string {
  return "event truncated at byte " + at.toString();
}
