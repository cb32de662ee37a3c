#!/usr/bin/env bash
# Prints the trace digest of seeds 0..N-1 (default 40) of every scenario, one line each, so a
# refactor that must not change what a world does can be checked: run it before and after and
# diff the two outputs. Usage: scripts/digests.sh [TEMPEST_BINARY] [SEED_COUNT]
set -euo pipefail
binary="${1:-target/release/tempest}"
seed_count="${2:-40}"
for scenario in $("$binary" scenarios | awk '{print $1}'); do
    for ((seed = 0; seed < seed_count; seed++)); do
        digest=$("$binary" run "$scenario" --seed "$seed" | awk '/^trace digest:/ {print $3}' || true)
        echo "$scenario $seed $digest"
    done
done
