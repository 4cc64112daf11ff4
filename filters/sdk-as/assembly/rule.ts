// What a rule registers (its handler and init hook) and the host services it may call.

import { Event } from "./event";
import { Decision } from "./decision";
import { logString, hostNowUnixNano } from "./host";

/** Decides the fate of one event. The host calls it one event at a time. */
export type Handler = (e: Event) => Decision;

/**
 * Receives the route's rule configuration (JSON by convention, possibly empty; the rule's own
 * copy) once per instance, before the first event. Returns null to accept it, or a message that
 * refuses it: the host then refuses the rule with that message.
 */
export type InitHook = (config: Uint8Array) => string | null;

export let handler: Handler | null = null;
export let initHook: InitHook | null = null;

/** Registers the rule's handler. Call it at the top level of the rule; a later call replaces it. */
export function handle(h: Handler): void {
  handler = h;
}

/** Registers the rule's init hook (optional: without one, any configuration is accepted). */
export function onInit(f: InitHook): void {
  initHook = f;
}

// Log levels, as in Go's log/slog.
export const LEVEL_DEBUG: i32 = -4;
export const LEVEL_INFO: i32 = 0;
export const LEVEL_WARN: i32 = 4;
export const LEVEL_ERROR: i32 = 8;

/**
 * Writes msg to the host's log at level, tagged with the rule's name and version. The host
 * rate-limits rule logs and counts the lines it suppressed.
 */
export function log(level: i32, msg: string): void {
  logString(level, msg);
}

/**
 * The wall-clock time in nanoseconds since the Unix epoch. Only a rule granted the clock may
 * call it: using it makes the module import turnout.now_unix_nano, and the host refuses such a
 * module unless the route grants the clock.
 */
export function nowUnixNano(): i64 {
  return hostNowUnixNano();
}
