// Garbage collection between calls, for the minimal runtime (TLSF allocator and a two-colour
// mark-and-sweep collector that runs only when __collect is called, and must be called when no
// managed object is referenced from the stack only: here, between calls).
//
// A collection marks every object reachable from globals, so running one after every event
// would cost a rule that allocates nothing a walk of its whole configuration per event. Instead,
// after each collection a fresh marker object is allocated. The collector links every new object
// after the last one (the marker, right after a collection), so the marker's link to its
// successor still pointing at the list head means that nothing was allocated since, and the
// collection is skipped. This reads the runtime's object header (assemblyscript 0.28, pinned
// exactly in package.json); the test "garbage is collected" in hostabi/sdkload_as_test.go
// catches a runtime whose layout differs, as memory growing to the cap.

// The header of a managed object, before its data (std/assembly/rt/tcms.ts, wasm32): mmInfo,
// nextWithColor, prev, rtId, rtSize. nextWithColor is 16 bytes before the data; its low 2 bits
// are the colour.
// @ts-ignore: decorator
@inline const NEXT_OFFSET: usize = 16;

class Marker {}

let marker: Marker | null = null;
let markerNext: usize = 0;

function nextOf(m: Marker): usize {
  return load<u32>(changetype<usize>(m) - NEXT_OFFSET) & ~3;
}

/** Allocates a fresh marker at the end of the collector's list of objects. */
export function markHeap(): void {
  let m = new Marker();
  marker = m;
  markerNext = nextOf(m);
}

/** Collects garbage if anything was allocated since the last markHeap. */
export function collectIfAllocated(): void {
  let m = marker;
  if (m !== null && nextOf(m) == markerNext) return;
  __collect();
  markHeap();
}
