# filters/sdk-as/rules.mk: builds the AssemblyScript SDK's stock rules, filters/sdk-as/rules/<name>
# (all but the conformance rule conform), to build/rules/assemblyscript/<name>.wasm with the
# compiler package-lock.json pins, when npx is present; without it, says so and builds nothing.
# Included by the top-level Makefile; run from the module root. It adds rules-as to `make rules`.

AS_SDK        := filters/sdk-as
AS_RULE_NAMES := $(filter-out conform,$(notdir $(patsubst %/,%,$(dir $(wildcard $(AS_SDK)/rules/*/index.ts)))))
AS_RULE_WASM  := $(AS_RULE_NAMES:%=build/rules/assemblyscript/%.wasm)
AS_DEPS       := $(wildcard $(AS_SDK)/assembly/*.ts) $(AS_SDK)/asconfig.json $(AS_SDK)/package-lock.json
AS_INSTALLED  := $(AS_SDK)/node_modules/.package-lock.json

.PHONY: rules rules-as
rules: rules-as

ifneq ($(shell command -v npx 2>/dev/null),)
rules-as: $(AS_RULE_WASM)
else
rules-as:
	@echo "rules-as: npx not found, the AssemblyScript rules are not built (make toolchains installs Node.js and npm)"
endif

# npm ci writes node_modules/.package-lock.json: reinstall when the lock file is newer.
$(AS_INSTALLED): $(AS_SDK)/package-lock.json
	cd $(AS_SDK) && npm ci --no-audit --no-fund
	@touch $@

build/rules/assemblyscript/%.wasm: $(AS_SDK)/rules/%/index.ts $(AS_DEPS) $(AS_INSTALLED)
	@mkdir -p build/rules/assemblyscript
	cd $(AS_SDK) && npx --no -- asc rules/$*/index.ts --config asconfig.json --target release -o $(CURDIR)/$@
