#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine (as root) and runs strata's
# whole test suite against the real daemon stack: unit tests, then integration
# tests that talk to buildkitd (unix, tcp+mTLS), dockerd's BuildKit and the registry.
set -euo pipefail
cd "$(dirname "$0")/.."

# Start (or reuse) buildkitd, dockerd, the registry and the base image.
eval "$(bash scripts/daemon.sh up)"

# A real SPDX validator (spdx-tools, from PyPI) for the SBOM tests, in a venv
# kept beside the daemon stack's caches.
spdx=${STRATA_CACHE_DIR:-/var/cache/strata}/spdx-tools-0.8.5
if [ ! -f "$spdx/.done" ]; then
  rm -rf "$spdx"
  python3 -m venv "$spdx"
  "$spdx/bin/pip" install --quiet --disable-pip-version-check spdx-tools==0.8.5 || { rm -rf "$spdx"; exit 1; }
  touch "$spdx/.done"
fi
export STRATA_SPDX_VALIDATOR=$spdx/bin/pyspdxtools

# The integration tests share one daemon and prune it: run test binaries one at
# a time (cargo does), and let each binary's tests run two at a time.
# Everything printed is kept, so a failure's message can be said again at the
# end, where a CI log's tail shows it.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast --lib --bins --tests -- --test-threads "${STRATA_TEST_THREADS:-2}" 2>&1 \
  | tee "$log" || status=$?
# The benchmarks once each, quickly (criterion's test mode; a small upload).
cargo test --locked --no-fail-fast --benches 2>&1 | tee -a "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo
  echo "=== failed tests, their messages again (backtraces left out) ==="
  grep -E -A 14 "^thread '.*' .*panicked at" "$log" \
    | grep -v -E '^ +([0-9]+: |at )|^stack backtrace:|^note: ' | head -n 200
fi
exit "$status"
