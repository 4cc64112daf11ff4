// A bad rule for hostabi's load tests: it claims rule ABI version 2, newer than any host speaks.
// The host must refuse it with abi_version_unknown.

import { Event, Decision, handle, drop } from "../../assembly";
export { turnout_buffer, turnout_init, turnout_decide } from "../../assembly/abi";

export function turnout_abi_version(): i32 {
  return 2;
}

handle((e: Event): Decision => drop());
