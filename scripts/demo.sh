#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine (as root): start the daemon stack,
# then build examples/codex (base + apt/pip/npm toolchain + overlay) with strata,
# push it to the local registry and export its build cache; then show what the
# cache buys: an unchanged rebuild (all cached) and a one-file overlay edit
# (only the overlay step runs); then a release build with provenance and an
# SBOM, read back with `strata images attestations`.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build of strata serves both the daemon script (which uses it to make
# the base image) and the demo: a fresh machine compiles it once.
echo "== building strata" >&2
cargo build --release --locked --quiet
strata=${CARGO_TARGET_DIR:-target}/release/strata
[[ $strata == /* ]] || strata=$PWD/$strata

eval "$(STRATA_BIN=$strata bash scripts/daemon.sh up)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/codex "$work/codex"
spec=$work/codex/strata.toml
image=$STRATA_REGISTRY/strata/codex:demo
cache=${STRATA_DEMO_CACHE:-${STRATA_CACHE_DIR:-/var/cache/strata}/demo-cache}

"$strata" info | sed -n 1,3p

echo "== 1. build and push $image (cache mounts for apt, pip, npm; cache and the mounts exported to $cache)" >&2
"$strata" build -f "$spec" codex --push "$image" --progress plain \
  --cache-to "type=local,dest=$cache,mounts=all" --metadata-file "$work/metadata.json"

echo "== 2. rebuild, nothing changed: its content key is already in the registry, nothing is solved" >&2
"$strata" build -f "$spec" codex --push "$image" --progress plain

echo "== 2b. solved anyway (--no-skip): every step comes from the cache" >&2
"$strata" build -f "$spec" codex --push "$image" --progress plain --no-skip

echo "== 3. edit one overlay file: only the overlay step runs" >&2
echo "# edited at $(date -u +%FT%TZ)" >>"$work/codex/overlay/AGENTS.md"
"$strata" build -f "$spec" codex --push "$image" --progress plain

echo "== 4. a release build: provenance and an SBOM (strata's own generator, $STRATA_SBOM_GENERATOR) attached" >&2
"$strata" build -f "$spec" codex --push "$STRATA_REGISTRY/strata/codex:release" --progress plain \
  --provenance=max --sbom
"$strata" images attestations --provenance "$STRATA_REGISTRY/strata/codex:release"
"$strata" images attestations --sbom "$STRATA_REGISTRY/strata/codex:release" | grep -E ' (KIND|git|requests|is-number) '

echo "== metadata of build 1" >&2
cat "$work/metadata.json"
"$strata" du
