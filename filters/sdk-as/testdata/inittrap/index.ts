// A bad rule for hostabi's load tests: its init hook throws (an abort, then a trap) on any
// configuration. The host must refuse it with init_failed and quote the abort message.

import { Event, Decision, handle, onInit, drop } from "../../assembly";
export * from "../../assembly/abi";

onInit((config: Uint8Array): string | null => {
  throw new Error("inittrap: cannot start with " + config.length.toString() + " bytes of config");
});
handle((e: Event): Decision => drop());
