#!/usr/bin/env bash
# Builds a rule crate written with the Rust SDK into a WebAssembly module, with rustc alone (no
# cargo, no network). `make rules` (rules.mk) and the Go tests (internal/rulebuild, rust.go) build
# the Rust rules with it, so both get the same module.
#
#   build.sh RULE_DIR OUT.wasm   RULE_DIR is a rule crate: src/lib.rs (cargo layout) or lib.rs
#   build.sh --rustc             prints the rustc it would use, then its `rustc -vV`; exits 3 when
#                                no rustc has the wasm32-unknown-unknown standard library
#
# The compiler is $RUSTC when set, otherwise the first of `rustc` on PATH and /usr/bin/rustc
# (Debian's, which rustup's may shadow) whose sysroot holds the wasm32-unknown-unknown standard
# library. scripts/toolchains.d/rust.sh installs one.
set -euo pipefail

sdk=$(cd "$(dirname "$0")" && pwd)
target=wasm32-unknown-unknown

has_wasm_std() {
	local sysroot
	sysroot=$("$1" --print sysroot 2>/dev/null) || return 1
	compgen -G "$sysroot/lib/rustlib/$target/lib/libstd-*.rlib" >/dev/null
}

find_rustc() {
	local c
	if [ -n "${RUSTC:-}" ]; then
		has_wasm_std "$RUSTC" && { echo "$RUSTC"; return; }
		return 1
	fi
	for c in "$(command -v rustc || true)" /usr/bin/rustc; do
		[ -n "$c" ] && [ -x "$c" ] && has_wasm_std "$c" && { echo "$c"; return; }
	done
	return 1
}

if ! rustc=$(find_rustc); then
	echo "build.sh: no rustc with the $target standard library (${RUSTC:-rustc on PATH, /usr/bin/rustc}): run scripts/toolchains.d/rust.sh (Debian: apt-get install rustc libstd-rust-dev-wasm32 lld-14), or rustup target add $target" >&2
	exit 3
fi
if [ "${1:-}" = --rustc ]; then
	echo "$rustc"
	"$rustc" -vV
	exit 0
fi
if [ $# -ne 2 ]; then
	echo "usage: build.sh RULE_DIR OUT.wasm | build.sh --rustc" >&2
	exit 2
fi
dir=$1 out=$2
if ! absdir=$(cd "$dir" 2>/dev/null && pwd); then
	echo "build.sh: no directory $dir" >&2
	exit 2
fi
src=$absdir/src/lib.rs
[ -f "$src" ] || src=$absdir/lib.rs
if [ ! -f "$src" ]; then
	echo "build.sh: $dir has neither src/lib.rs nor lib.rs" >&2
	exit 2
fi
name=$(basename "$absdir")
name=${name//-/_}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The release profile of Cargo.toml, as rustc flags; source paths (in panic messages) are made
# relative, so that the module, and so its version, does not depend on where the checkout is.
flags=(--edition 2021 --target "$target" -C opt-level=s -C panic=abort -C codegen-units=1
	--remap-path-prefix "$sdk=turnout-rule" --remap-path-prefix "$absdir=$name")
"$rustc" "${flags[@]}" --crate-type rlib --crate-name turnout "$sdk/src/lib.rs" -o "$tmp/libturnout.rlib"
# A 128 KiB stack instead of the linker's 1 MiB: the stack is most of an instance's memory, and
# it comes first in memory, so a rule that overflows it traps (.cargo/config.toml, for cargo).
"$rustc" "${flags[@]}" -C lto -C strip=debuginfo -C link-arg=-zstack-size=131072 --crate-type cdylib --crate-name "$name" \
	--extern turnout="$tmp/libturnout.rlib" -L "dependency=$tmp" "$src" -o "$tmp/$name.wasm"
mkdir -p "$(dirname "$out")"
mv "$tmp/$name.wasm" "$out"
