// @turnout/rule-sdk: the guest side of turnout's rule ABI v1 (hostabi/ABI.md) for rules written
// in AssemblyScript. A rule is an entry file that registers a handler at its top level and
// re-exports the ABI:
//
//   import { Event, Decision, handle, route, drop } from "@turnout/rule-sdk";
//   export * from "@turnout/rule-sdk/assembly/abi";
//   handle((e: Event): Decision => e.type == "alarm" ? route("urgent") : drop());
//
// built with the options of this package's asconfig.json (README.md).

import "./host"; // the abort, trace and seed replacements (global functions)

export { Event, Utf8 } from "./event";
export { Decision, drop, route, routeMany, fail } from "./decision";
export { Handler, InitHook, handle, onInit, log, nowUnixNano, LEVEL_DEBUG, LEVEL_INFO, LEVEL_WARN, LEVEL_ERROR } from "./rule";
export { jsonField, JSONEach, jsonString, jsonStrings, quote } from "./json";
