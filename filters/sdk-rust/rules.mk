# filters/sdk-rust/rules.mk: builds the Rust SDK's stock rules, filters/sdk-rust/rules/<name>
# (all but the conformance rule conform), to build/rules/rust/<name>.wasm with
# filters/sdk-rust/build.sh (rustc for wasm32-unknown-unknown: the same build the Go tests load,
# internal/rulebuild/rust.go), when a rustc with the wasm32 standard library is installed;
# without one, says so and builds nothing. Included by the top-level Makefile; run from the
# module root. It adds rules-rust to `make rules`.

RUST_SDK        := filters/sdk-rust
RUST_RULE_NAMES := $(filter-out conform,$(notdir $(patsubst %/,%,$(dir $(wildcard $(RUST_SDK)/rules/*/Cargo.toml)))))
RUST_RULE_WASM  := $(RUST_RULE_NAMES:%=build/rules/rust/%.wasm)
# A change to any rule's sources rebuilds them all: there are few, and they build in seconds.
RUST_DEPS       := $(wildcard $(RUST_SDK)/src/*.rs $(RUST_SDK)/rules/*/Cargo.toml $(RUST_SDK)/rules/*/src/*.rs) $(RUST_SDK)/build.sh
RUST_TOOLCHAIN  := $(shell bash $(RUST_SDK)/build.sh --rustc 2>/dev/null | head -n1)

.PHONY: rules rules-rust
rules: rules-rust

ifneq ($(RUST_TOOLCHAIN),)
rules-rust: $(RUST_RULE_WASM)
else
rules-rust:
	@echo "rules-rust: no rustc with the wasm32-unknown-unknown standard library, the Rust rules are not built (make toolchains installs Debian's)"
endif

build/rules/rust/%.wasm: $(RUST_SDK)/rules/%/src/lib.rs $(RUST_DEPS)
	bash $(RUST_SDK)/build.sh $(RUST_SDK)/rules/$* $@
