package hostabi

// Load failure codes: stable identifiers an API can return and a person can act on. Every error
// Host.Load returns wraps a *LoadError carrying one of them (errors.As).
const (
	// CodeNotWasm: the bytes are not a WebAssembly core module (no \0asm magic, or a component
	// or other binary version). Upload the .wasm file the compiler produced.
	CodeNotWasm = "not_wasm"
	// CodeCompile: the runtime could not compile the module (truncated or invalid binary).
	CodeCompile = "compile"
	// CodeMemoryMinAboveCap: the module's declared minimum memory exceeds the route's cap; raise
	// rule.memory_limit_pages or build the rule with a smaller initial memory.
	CodeMemoryMinAboveCap = "memory_min_above_cap"
	// CodeImportNotAllowed: the module imports something outside the allowed set (ABI.md §6), or
	// the clock without the grant.
	CodeImportNotAllowed = "import_not_allowed"
	// CodeExportMissing: a required export (or the memory) is missing, or an export has the
	// wrong type (ABI.md §2).
	CodeExportMissing = "export_missing"
	// CodeABIVersionUnknown: turnout_abi_version reports a version this host does not speak.
	CodeABIVersionUnknown = "abi_version_unknown"
	// CodeInitFailed: the instance could not be started or its turnout_init refused the
	// configuration (also: a configuration given to a rule that takes none).
	CodeInitFailed = "init_failed"
)

// LoadError is why Host.Load refused a module: a stable Code (the Code* constants) and the
// human-readable Detail. Its Error is the Detail alone; Load wraps it with the rule's name and
// version.
type LoadError struct {
	Code   string
	Detail string
}

func (e *LoadError) Error() string { return e.Detail }
