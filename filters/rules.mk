# filters/rules.mk: builds every stock rule in filters/rules/<name> to build/rules/<name>.wasm.
# Included by the top-level Makefile; run from the module root. Rules are Go wasip1 reactors
# (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared) speaking rule ABI v1 (hostabi/ABI.md).

RULE_NAMES := $(notdir $(patsubst %/,%,$(dir $(wildcard filters/rules/*/main.go))))
RULE_WASM  := $(RULE_NAMES:%=build/rules/%.wasm)
RULE_DEPS  := $(wildcard filters/sdk/*.go) $(wildcard hostabi/wire/*.go) go.mod

.PHONY: rules
rules: $(RULE_WASM)

build/rules/%.wasm: filters/rules/%/main.go $(RULE_DEPS)
	@mkdir -p build/rules
	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o $@ ./filters/rules/$*
