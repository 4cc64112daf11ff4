#!/usr/bin/env bash
# The compilers the rule SDKs' tests build rules with, beyond Go: each scripts/toolchains.d/*.sh
# installs what is missing for one language (idempotent; root needed for installs) and says
# which compiler it found. `make test` runs it before the tests; a test whose compiler is still
# missing fails in CI and is skipped elsewhere with a message naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in scripts/toolchains.d/*.sh; do
	[ -e "$f" ] || continue
	bash "$f"
done
