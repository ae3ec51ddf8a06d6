#!/usr/bin/env bash
# Placement on a pool, compared with `strata pool bench`: strata's
# (rendezvous, bounded load), buildx's sticky hash of the context path, and
# random. The spec is an 8-image tree (tests/pool.rs's shape: a base, two
# tiers, five services; each image a 20 MB step and an overlay). For each
# policy the nodes of STRATA_POOL are emptied, the tree is built cold, then
# rebuilt ROUNDS times, each after editing one service's overlay (the same
# sequence for every policy).
#
#   eval "$(scripts/daemon.sh up --nodes 3)"
#   scripts/bench-placement.sh [ROUNDS] [strata pool bench flags…]   (default 6)
set -euo pipefail
rounds=${1:-6}
shift || true
strata=${STRATA_BIN:-$(dirname "$0")/../target/debug/strata}
: "${STRATA_POOL:?run: eval \"\$(scripts/daemon.sh up --nodes 3)\"}"
: "${STRATA_BASE_IMAGE:?run: eval \"\$(scripts/daemon.sh up --nodes 3)\"}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

spec=$work/strata.toml
for entry in pybase: ml:pybase tools:pybase svc-a:ml svc-b:ml svc-c:ml svc-d:tools svc-e:tools; do
  name=${entry%%:*} from=${entry#*:}
  mkdir -p "$work/overlay/$name"
  echo "$name" >"$work/overlay/$name/hello.txt"
  echo "[images.$name]" >>"$spec"
  if [[ -n $from ]]; then echo "from = \"$from\"" >>"$spec"
  else echo "base = \"$STRATA_BASE_IMAGE\"" >>"$spec"; fi
  cat >>"$spec" <<EOT

[[images.$name.toolchain]]
run = "sleep 1; head -c 20000000 /dev/urandom > /$name.bin"

[images.$name.overlay]
copy = { from = "overlay/$name/", to = "/srv/$name" }

EOT
done

"$strata" --addr "$STRATA_POOL" pool bench -f "$spec" --rounds "$rounds" --allow-prune "$@"
