#!/usr/bin/env bash
# DeployBot benchmarks (see BENCHMARKS.md). Usage:
#   bench/run.sh [scenario...]     scenarios: ingest dispatch logs idle agent cluster
#                                  (default: all but cluster, which needs PostgreSQL)
# Env: RUNS (default 3), SECONDS_PER_RUN (default 10).
# Release builds; one controller per scenario on a fresh SQLite file in a temp
# dir; load from deploybot-loadgen over loopback; medians of RUNS runs, with
# the disk's fsync latency printed next to each run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
seconds=${SECONDS_PER_RUN:-10}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(ingest dispatch logs idle agent)
pg_url=${DEPLOYBOT_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}

cargo build --release --quiet -p deploybot -p deploybot-loadgen
bin=$PWD/target/release
ulimit -n "$(ulimit -Hn)"   # 10,000 long-polls need as many sockets
addr=127.0.0.1:18088
export DEPLOYBOT_WEBHOOK_SECRET=bench-secret
# Authentication on, as in production: the controller and the load generator
# share these (agents register with the enrollment token, then use their own).
export DEPLOYBOT_ADMIN_TOKEN=bench-admin-token-0123456789
export DEPLOYBOT_ENROLLMENT_TOKEN=bench-enrollment-token-0123456789

work=$(mktemp -d)
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
{
    echo "apps:"
    echo "  - {name: web, repo: acme/web, hosts: [web-01, web-02], deploy: {command: [./deploy.sh]}}"
    printf "  - {name: fleet, repo: acme/fleet, deploy: {command: [./deploy.sh]}, hosts: ["
    for i in $(seq 0 99); do printf "bench-agent-%s%s" "$i" "$([ "$i" = 99 ] || echo ", ")"; done
    echo "]}"
} > "$work/apps.yaml"

start_server() { # [data dir]: a fresh one unless given
    data=${1:-$(mktemp -d -p "$work")}
    RUST_LOG=warn "$bin/deploybot" server --listen "$addr" --data-dir "$data" \
        --apps "$work/apps.yaml" 2>>"$data/server.log" &
    server=$!
    until curl -sf "http://$addr/health" >/dev/null; do
        kill -0 "$server" || { cat "$data/server.log"; exit 1; }
        sleep 0.1
    done
}
stop_server() { kill "$server"; wait "$server" || true; server=""; }
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
load() { "$bin/deploybot-loadgen" --addr "$addr" --duration "${seconds}s" --fsync-dir "$data" "$@"; }
results() { grep -v '^fsync' "$1"; }   # the result lines of a scenario's output
summarize() { # file: median rate and p99 of its runs
    echo "  median of $runs: $(results "$1" | grep -o '= [0-9]*' | tr -dc '0-9\n' | median)/s," \
         "p99 $(results "$1" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2 | median) ms"
}

ingest() {
    start_server
    sleep 1
    echo "idle RSS after start: $(rss "$server")"
    echo "== webhooks: unique signed pushes, 2 jobs each, 64 connections"
    for _ in $(seq "$runs"); do load webhooks | tee -a "$work/webhooks"; done
    summarize "$work/webhooks"
    echo "== heartbeats: 1000 registered agents, 64 connections"
    for _ in $(seq "$runs"); do load heartbeats --agents 1000 | tee -a "$work/heartbeats"; done
    summarize "$work/heartbeats"
    local count
    count=$(sqlite3 "$data/deploybot.db" "SELECT count(*) FROM jobs" 2>/dev/null || echo "?")
    echo "== memory: RSS with $count jobs in the database, after the load: $(rss "$server")"
    stop_server
    start_server "$data"
    sleep 1
    echo "   after a restart on that database, idle: $(rss "$server")"
    stop_server
}

dispatch() {
    echo "== dispatch: 100 long-polling agents, push → every agent holds its job"
    for _ in $(seq "$runs"); do
        start_server
        load dispatch --agents 100 --pushes 50 | tee -a "$work/dispatch"
        stop_server
    done
    echo "  median of $runs: p50 $(results "$work/dispatch" | grep -o 'p50 [0-9.]*' | cut -d' ' -f2 | median) ms," \
         "p99 $(results "$work/dispatch" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2 | median) ms"
}

logs() {
    echo "== log ingest: 100 running jobs, 52,000 lines/s offered in 25-line uploads (an agent's"
    echo "   50 ms batches), one SSE subscriber of everything"
    for _ in $(seq "$runs"); do
        start_server
        load logs --jobs 100 --batch 25 --rate 52000 | tee -a "$work/logs"
        stop_server
    done
    echo "  median of $runs: $(results "$work/logs" | grep -o '= [0-9]* lines/s' | tr -dc '0-9\n' | median) lines/s," \
         "SSE p99 $(results "$work/logs" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2 | median) ms"
    echo "== log ingest ceiling: the same, closed loop with 100-line uploads"
    start_server
    load logs --jobs 100 --batch 100
    stop_server
}

idle() {
    echo "== 10,000 idle long-polling agents, then webhook and heartbeat load beside them"
    start_server
    "$bin/deploybot-loadgen" --addr "$addr" --duration "$((seconds * 2 + 40))s" idle --agents 10000 \
        > "$work/idle" &
    local idler=$!
    until grep -q "connected" "$work/idle" 2>/dev/null; do sleep 0.5; done
    cat "$work/idle"
    echo "  RSS holding them: $(rss "$server")"
    load webhooks
    load heartbeats --agents 1000
    echo "  RSS after the load: $(rss "$server")"
    kill "$idler" 2>/dev/null || true
    stop_server
}

cluster() {
    echo "== two controllers on one PostgreSQL database (fresh), loads split between them"
    local db="deploybot_bench_$$"
    psql -X -q -d "$pg_url/postgres" -c "CREATE DATABASE $db"
    local a=127.0.0.1:18091 b=127.0.0.1:18092 pids=()
    for instance in $a $b; do
        local dir
        dir=$(mktemp -d -p "$work")
        RUST_LOG=warn "$bin/deploybot" server --listen "$instance" --data-dir "$dir" \
            --apps "$work/apps.yaml" --database-url "$pg_url/$db?sslmode=disable" 2>>"$dir/server.log" &
        pids+=($!)
        until curl -sf "http://$instance/health" >/dev/null; do sleep 0.1; done
    done
    for _ in $(seq "$runs"); do
        "$bin/deploybot-loadgen" --addr "$a" --connections 32 --duration "${seconds}s" webhooks > "$work/wa" &
        local other=$!
        "$bin/deploybot-loadgen" --addr "$b" --connections 32 --duration "${seconds}s" webhooks > "$work/wb"
        wait "$other" || true
        cat "$work/wa" "$work/wb"
        echo "  both: $(cat "$work/wa" "$work/wb" | grep -o '= [0-9]*' | tr -dc '0-9\n' | paste -sd+ | bc)/s"
    done
    for _ in $(seq "$runs"); do
        "$bin/deploybot-loadgen" --addr "$a" --connections 32 --duration "${seconds}s" heartbeats --agents 500 --prefix bench-a > "$work/ha" &
        local other=$!
        "$bin/deploybot-loadgen" --addr "$b" --connections 32 --duration "${seconds}s" heartbeats --agents 500 --prefix bench-b > "$work/hb"
        wait "$other" || true
        cat "$work/ha" "$work/hb"
        echo "  both: $(cat "$work/ha" "$work/hb" | grep -o '= [0-9]*' | tr -dc '0-9\n' | paste -sd+ | bc)/s"
    done
    for _ in $(seq "$runs"); do
        "$bin/deploybot-loadgen" --addr "$a" dispatch --push-addr "$b"
    done
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    psql -X -q -d "$pg_url/postgres" -c "DROP DATABASE $db WITH (FORCE)"
}

agent() {
    echo "== the agent, idle (long-polling a controller with nothing to do)"
    start_server
    "$bin/deploybot" agent --controller "http://$addr" --hostname web-01 \
        --state-dir "$data/agent" 2>"$data/agent.log" &
    local agent_pid=$!
    sleep 5
    local before after
    before=$(awk '{print $14 + $15}' "/proc/$agent_pid/stat")
    sleep 30
    after=$(awk '{print $14 + $15}' "/proc/$agent_pid/stat")
    echo "  RSS: $(rss "$agent_pid"); CPU over 30 s idle: $((after - before)) ticks of 1/$(getconf CLK_TCK) s"
    kill "$agent_pid"
    wait "$agent_pid" || true
    stop_server
}

for scenario in "${scenarios[@]}"; do "$scenario"; done
