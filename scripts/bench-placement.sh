#!/usr/bin/env bash
# Placement on a pool, compared: strata's (rendezvous, bounded load), buildx's
# sticky hash of the context path, and random. For each, the three nodes of
# STRATA_POOL are emptied, an 8-image tree (tests/pool.rs's shape: a base,
# two tiers, five services) is built cold, then rebuilt ROUNDS times, each
# after editing one service's overlay (the same sequence for every policy).
# Prints, per policy, the cold build's time and the rebuilds' total time and
# cache hit rate (spec steps found cached / all spec steps).
#
#   eval "$(scripts/daemon.sh up --nodes 3)"
#   scripts/bench-placement.sh [ROUNDS]        (default 6)
set -euo pipefail
rounds=${1:-6}
strata=${STRATA_BIN:-$(dirname "$0")/../target/debug/strata}
: "${STRATA_POOL:?run: eval \"\$(scripts/daemon.sh up --nodes 3)\"}"
: "${STRATA_BASE_IMAGE:?run: eval \"\$(scripts/daemon.sh up --nodes 3)\"}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

services=(svc-a svc-b svc-c svc-d svc-e)
write_spec() {
  local spec=$1/strata.toml name from
  : >"$spec"
  for entry in pybase: ml:pybase tools:pybase svc-a:ml svc-b:ml svc-c:ml svc-d:tools svc-e:tools; do
    name=${entry%%:*} from=${entry#*:}
    mkdir -p "$1/overlay/$name"
    echo "$name" >"$1/overlay/$name/hello.txt"
    if [[ -n $from ]]; then echo "[images.$name]" >>"$spec"; echo "from = \"$from\"" >>"$spec"
    else echo "[images.$name]" >>"$spec"; echo "base = \"$STRATA_BASE_IMAGE\"" >>"$spec"; fi
    cat >>"$spec" <<EOT

[[images.$name.toolchain]]
run = "sleep 1; head -c 20000000 /dev/urandom > /$name.bin"

[images.$name.overlay]
copy = { from = "overlay/$name/", to = "/srv/$name" }

EOT
  done
}

# build DIR POLICY: wall seconds, spec steps, cached steps, most images on one node
build() {
  local meta=$work/meta.json t0 t1
  t0=$(date +%s.%N)
  "$strata" --addr "$STRATA_POOL" --placement "$2" build -f "$1/strata.toml" \
    --progress plain --metadata-file "$meta" >/dev/null 2>&1
  t1=$(date +%s.%N)
  python3 - "$meta" "$t0" "$t1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
steps = sum(v["strata.steps"] for v in m.values())
cached = sum(v["strata.cached"] for v in m.values())
nodes = [v["strata.node"] for v in m.values()]
busiest = max(nodes.count(n) for n in set(nodes))
print(f"{float(sys.argv[3]) - float(sys.argv[2]):.2f} {steps} {cached} {busiest}")
PY
}

printf '%-12s %9s %9s %11s %9s\n' PLACEMENT COLD 'MAX LOAD' REBUILDS HIT
for policy in rendezvous context-path random; do
  IFS=, read -ra nodes <<<"$STRATA_POOL"
  for node in "${nodes[@]}"; do "$strata" --addr "$node" prune --all >/dev/null; done
  dir=$work/$policy
  mkdir -p "$dir"
  write_spec "$dir"
  read -r cold _ _ busiest < <(build "$dir" "$policy")
  total=0 steps=0 cached=0
  for ((r = 0; r < rounds; r++)); do
    echo "edit $r" >>"$dir/overlay/${services[r % 5]}/hello.txt"
    read -r t s c _ < <(build "$dir" "$policy")
    total=$(python3 -c "print($total + $t)") steps=$((steps + s)) cached=$((cached + c))
  done
  printf '%-12s %8.1fs %7s/8 %10.1fs %8.0f%%\n' "$policy" "$cold" "$busiest" "$total" \
    "$(python3 -c "print(100 * $cached / $steps)")"
done
