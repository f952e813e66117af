#!/usr/bin/env bash
# Benchmarks of issue #2 (see BENCHMARKS.md): webhook ingest, heartbeats, memory.
# Usage: bench/run.sh [runs] [seconds]    (defaults: 3 runs of 10 s each)
# Builds release binaries, starts one controller on a fresh SQLite file in a
# temp dir, drives it with deploybot-loadgen over loopback, and prints the
# median of the runs, with the disk's fsync latency next to each run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-10}
cargo build --release --quiet -p deploybot -p deploybot-loadgen
bin=target/release

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/apps.yaml" <<'YAML'
apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    deploy:
      command: ["./deploy.sh"]
YAML
export DEPLOYBOT_WEBHOOK_SECRET=bench-secret
RUST_LOG=warn "$bin/deploybot" server --listen 127.0.0.1:18088 --data-dir "$work/data" \
    --apps "$work/apps.yaml" 2>"$work/server.log" &
server=$!
until curl -sf http://127.0.0.1:18088/health >/dev/null; do
    kill -0 "$server" || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
rss() { awk '/VmRSS/ {print $2 / 1024 " MB"}' "/proc/$server/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
load() { "$bin/deploybot-loadgen" --addr 127.0.0.1:18088 --duration "${seconds}s" --fsync-dir "$work/data" "$@"; }

echo "idle RSS after start: $(rss)"
echo "== webhooks: unique signed pushes, 2 jobs each, 64 connections"
: > "$work/webhooks"
for _ in $(seq "$runs"); do load webhooks | tee -a "$work/webhooks"; done
echo "median: $(grep -o '= [0-9]*/s' "$work/webhooks" | tr -dc '0-9\n' | median)/s," \
     "p99 $(grep -o 'p99 [0-9.]*' "$work/webhooks" | cut -d' ' -f2 | median) ms"

echo "== heartbeats: 1000 registered agents, 64 connections"
: > "$work/heartbeats"
for _ in $(seq "$runs"); do load heartbeats --agents 1000 | tee -a "$work/heartbeats"; done
echo "median: $(grep -o '= [0-9]*/s' "$work/heartbeats" | tr -dc '0-9\n' | median)/s," \
     "p99 $(grep -o 'p99 [0-9.]*' "$work/heartbeats" | cut -d' ' -f2 | median) ms"

jobs=$(curl -s "http://127.0.0.1:18088/v1/jobs?limit=1" | grep -o '"id":"[^"]*"' | head -1)
count=$(sqlite3 "$work/data/deploybot.db" "SELECT count(*) FROM jobs" 2>/dev/null || echo "?")
echo "== memory: RSS with $count jobs in the database (latest $jobs): $(rss)"
