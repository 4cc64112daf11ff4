// Decisions (hostabi/ABI.md, section 4, "Decision"). A Decision holds its outputs and reason
// already encoded, so returning one the rule built at init costs a copy of a few bytes: build the
// decisions you return often once, in the init hook or at the top level.

// @ts-ignore: decorator
@inline export const ACTION_DROP: u8 = 1;
// @ts-ignore: decorator
@inline export const ACTION_ROUTE: u8 = 2;
// @ts-ignore: decorator
@inline export const ACTION_FAIL: u8 = 3;

/** A handler's verdict: build it with drop(), route(), routeMany() or fail(). */
@final
export class Decision {
  /** The encoded outputs and reason: u32 count, count x str, str reason. */
  readonly head: ArrayBuffer;

  constructor(readonly action: u8, outputs: string[], reason: string) {
    let n = 4 + 4 + String.UTF8.byteLength(reason);
    for (let i = 0; i < outputs.length; i++) n += 4 + String.UTF8.byteLength(unchecked(outputs[i]));
    let head = new ArrayBuffer(n);
    let p = changetype<usize>(head);
    store<u32>(p, <u32>outputs.length);
    p += 4;
    for (let i = 0; i < outputs.length; i++) p = putStr(p, unchecked(outputs[i]));
    putStr(p, reason);
    this.head = head;
  }

  /** The output names (decoded again; for tests and logs). */
  get outputs(): string[] {
    let p = changetype<usize>(this.head);
    let n = load<u32>(p);
    p += 4;
    let r = new Array<string>(n);
    for (let i: u32 = 0; i < n; i++) {
      let l = load<u32>(p);
      unchecked(r[i] = String.UTF8.decodeUnsafe(p + 4, l));
      p += 4 + <usize>l;
    }
    return r;
  }
}

function putStr(p: usize, s: string): usize {
  let n = <usize>String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, p + 4);
  store<u32>(p, <u32>n);
  return p + 4 + n;
}

const NONE: string[] = [];
const dropDecision = new Decision(ACTION_DROP, NONE, "");

/** Acknowledges the event without sending it anywhere. */
export function drop(): Decision {
  return dropDecision;
}

/** Sends the event (with its mutations) to the route's output called output. */
export function route(output: string): Decision {
  return new Decision(ACTION_ROUTE, [output], "");
}

/** Sends the event (with its mutations) to every named output of the route (at least one). */
export function routeMany(outputs: string[]): Decision {
  return new Decision(ACTION_ROUTE, outputs, "");
}

/** Sends the event (with its mutations) to the route's dead-letter output, with reason. */
export function fail(reason: string): Decision {
  return new Decision(ACTION_FAIL, NONE, reason);
}
