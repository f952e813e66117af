#!/usr/bin/env bash
# Two builds side by side in one sitting (these machines are noisy): runs
# each scenario ROUNDS times, alternating the builds, one run each time,
# and prints every run's figures and their medians per build. Usage:
#   bench/compare.sh OLD_BIN NEW_BIN [scenario...]    (default: ingest idle)
# OLD_BIN and NEW_BIN are directories holding a release `deploybot`; the
# load generator comes from NEW_BIN for both, so both get the same load.
# Env: ROUNDS (default 3), SECONDS_PER_RUN (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,8p' "$0"; exit 2; }
old=$(realpath "$1") new=$(realpath "$2")
shift 2
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(ingest idle)
rounds=${ROUNDS:-3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for build in old new; do
    mkdir "$work/$build"
    ln -s "$([ $build = old ] && echo "$old" || echo "$new")/deploybot" "$work/$build/deploybot"
    ln -s "$new/deploybot-loadgen" "$work/$build/deploybot-loadgen"
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The figures of one run's output, one "name value" line each.
figures() {
    awk '
        /^webhooks:/   { match($0, /= [0-9]+/); print "webhooks/s", substr($0, RSTART + 2, RLENGTH - 2) }
        /^heartbeats:/ { match($0, /= [0-9]+/); print "heartbeats/s", substr($0, RSTART + 2, RLENGTH - 2) }
        /RSS holding them/ { print "idle-10k-RSS-MB", $(NF - 1) }
        /RSS once each long-poll was answered/ { print "idle-10k-RSS-after-round-MB", $(NF - 1) }
        /RSS after a second round/ { print "idle-10k-RSS-after-2-rounds-MB", $(NF - 1) }
        /^idle RSS after start/ { print "RSS-at-start-MB", $(NF - 1) }
    ' "$1"
}

for scenario in "${scenarios[@]}"; do
    for round in $(seq "$rounds"); do
        for build in old new; do
            echo "== $scenario, round $round, $build build"
            RUNS=1 BENCH_BIN="$work/$build" bench/run.sh "$scenario" | tee "$work/out" | grep -v '^fsync' || true
            figures "$work/out" | sed "s/^/$scenario:/" >> "$work/$build.figures"
        done
    done
done

echo
echo "== medians of $rounds rounds (old: $old, new: $new)"
printf "%-34s %12s %12s %8s\n" figure old new change
for name in $(cut -d' ' -f1 "$work/new.figures" | sort -u); do
    o=$(awk -v n="$name" '$1 == n {print $2}' "$work/old.figures" | median)
    n=$(awk -v n="$name" '$1 == n {print $2}' "$work/new.figures" | median)
    change=$(awk -v o="$o" -v n="$n" 'BEGIN { if (o > 0) printf "%+.1f%%", 100 * (n - o) / o; else print "?" }')
    printf "%-34s %12s %12s %8s\n" "$name" "$o" "$n" "$change"
done
