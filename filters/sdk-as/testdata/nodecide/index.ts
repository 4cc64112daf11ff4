// A bad rule for hostabi's load tests: it forgets to export turnout_decide. The host must refuse
// it with export_missing, as it refuses a Go module without the export.

import { Event, Decision, handle, drop } from "../../assembly";
export { turnout_abi_version, turnout_buffer, turnout_init } from "../../assembly/abi";

handle((e: Event): Decision => drop());
