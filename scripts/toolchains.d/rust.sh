#!/usr/bin/env bash
# The Rust rule SDK's compiler (filters/sdk-rust): a rustc with the wasm32-unknown-unknown
# standard library, and its linker. filters/sdk-rust/build.sh finds one ($RUSTC, rustc on PATH,
# /usr/bin/rustc). When none is found, installs Debian's: rustc (1.63), libstd-rust-dev-wasm32
# (its wasm32 standard library), lld-14 (rustc links wasm32 with rust-lld, a link to lld-14 that
# the rustc package does not pull in) and cargo (for authors who build with cargo). rustup's
# rustc, if any, stays first on PATH; build.sh skips it when it lacks the wasm32 target.
# Idempotent; installing needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "toolchains/rust: $*"; }
build=filters/sdk-rust/build.sh
pkgs=(rustc libstd-rust-dev-wasm32 lld-14 cargo)

# The linker rustc will call for wasm32: rust-lld next to it, or in its sysroot's toolchain dir.
linker_ok() {
	local rustc=$1 sysroot host
	sysroot=$("$rustc" --print sysroot)
	host=$("$rustc" -vV | sed -n 's/^host: //p')
	for l in "$(dirname "$rustc")/rust-lld" "$sysroot/lib/rustlib/$host/bin/rust-lld"; do
		[ -x "$l" ] && "$l" -flavor wasm --version >/dev/null 2>&1 && return 0
	done
	return 1
}

if found=$(bash "$build" --rustc 2>/dev/null) && linker_ok "$(head -n1 <<<"$found")"; then
	log "$(head -n1 <<<"$found") $(sed -n 's/^release: //p' <<<"$found") with wasm32-unknown-unknown"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	log "no rustc with the wasm32-unknown-unknown standard library and linker; run this script as root to install Debian's (${pkgs[*]}), or rustup target add wasm32-unknown-unknown"
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	log "no rustc with the wasm32-unknown-unknown target, and no apt-get to install one: rustup target add wasm32-unknown-unknown"
	exit 0
fi
log "installing ${pkgs[*]}"
if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
found=$(bash "$build" --rustc)
log "$(head -n1 <<<"$found") $(sed -n 's/^release: //p' <<<"$found") with wasm32-unknown-unknown"
