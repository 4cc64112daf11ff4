#!/usr/bin/env bash
# The AssemblyScript rule SDK's toolchain (filters/sdk-as): Node.js 20 or newer with npm and npx,
# then the compiler package-lock.json pins, installed into filters/sdk-as/node_modules with npm ci.
# Idempotent: Debian's nodejs and npm are installed only when the command is missing (root
# needed), and npm ci runs only when node_modules does not hold the pinned versions. Prints the
# versions it found.
set -euo pipefail
cd "$(dirname "$0")/../.."
sdk=filters/sdk-as
log() { echo "toolchains/assemblyscript: $*"; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${missing[*]}; run this script as root to install them (Debian packages ${missing[*]})"
    exit 0
  fi
  log "installing ${missing[*]}"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  log "node $(node --version) is too old: the AssemblyScript compiler needs Node.js 20 or newer (Debian 13 ships it; on Debian 12 install a newer nodejs package)"
  exit 1
fi

# Does node_modules hold every package of the lock file at its pinned version?
installed() {
  node -e '
    const fs = require("fs"), path = require("path");
    const dir = process.argv[1];
    const lock = JSON.parse(fs.readFileSync(path.join(dir, "package-lock.json"), "utf8"));
    for (const [p, v] of Object.entries(lock.packages || {})) {
      if (!p.startsWith("node_modules/")) continue;
      try {
        if (JSON.parse(fs.readFileSync(path.join(dir, p, "package.json"), "utf8")).version !== v.version) process.exit(1);
      } catch { process.exit(1); }
    }' "$sdk"
}
if ! installed; then
  log "npm ci in $sdk"
  (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "node $(node --version), npm $(npm --version), $(cd "$sdk" && npx --no -- asc --version)"
