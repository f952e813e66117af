#!/usr/bin/env bash
# DeployBot benchmarks (see BENCHMARKS.md). Usage:
#   bench/run.sh [scenario...]     scenarios: ingest dispatch logs idle agent cluster soak
#                                  (default: all but cluster, which needs PostgreSQL,
#                                  and soak, which takes an hour)
# Env: RUNS (default 3), SECONDS_PER_RUN (default 10), CARGO_TARGET_DIR (honoured),
#      BENCH_BIN (a directory holding deploybot and deploybot-loadgen: no build),
#      SOAK_MINUTES (default 60).
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

if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN   # binaries built elsewhere (comparing two builds)
else
    cargo build --release --quiet -p deploybot -p deploybot-loadgen
    bin=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
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
    printf "  - {name: soak, repo: acme/soak, deploy: {command: [./deploy.sh]}, hosts: ["
    for i in $(seq 0 19); do printf "soak-agent-%s%s" "$i" "$([ "$i" = 19 ] || echo ", ")"; done
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
    # A prefix per run: every push is new (the same one each run would make
    # later runs' pushes redeliveries, answered as duplicates).
    for run in $(seq "$runs"); do load webhooks --prefix "run$run" | tee -a "$work/webhooks"; done
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
    "$bin/deploybot-loadgen" --addr "$addr" --duration "$((seconds * 2 + 75))s" idle --agents 10000 \
        > "$work/idle" &
    local idler=$!
    until grep -q "connected" "$work/idle" 2>/dev/null; do sleep 0.5; done
    cat "$work/idle"
    local connected=$SECONDS
    echo "  RSS holding them: $(rss "$server")"
    load webhooks
    load heartbeats --agents 1000
    echo "  RSS after the load: $(rss "$server")"
    # Long-polls are answered after 30 s (half the lease timeout) and sent
    # again: the steady state, with every connection's buffers used once.
    sleep $((connected + 35 - SECONDS > 0 ? connected + 35 - SECONDS : 0))
    echo "  RSS once each long-poll was answered and sent again: $(rss "$server")"
    sleep $((connected + 70 - SECONDS > 0 ? connected + 70 - SECONDS : 0))
    echo "  RSS after a second round: $(rss "$server")"
    kill "$idler" 2>/dev/null || true
    stop_server
}

# CPU ticks of every process, one "pid command ticks" line each.
cpu_snapshot() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        lp = index($0, "("); rp = index($0, ") ")
        comm = substr($0, lp + 1, rp - lp - 1); gsub(/ /, "_", comm)
        split(substr($0, rp + 2), f, " ")
        print $1, comm, f[12] + f[13]
    }'
}
# Starts sampling CPU use by command in the background, from 2 s into a
# load of $seconds to 2 s before its end (the steady middle); prints where
# the CPU went, in % of one core. Sets $sampler to wait for.
cpu_split() {
    (
        sleep 2
        cpu_snapshot > "$work/cpu.0"
        sleep "$((seconds - 4))"
        cpu_snapshot > "$work/cpu.1"
        awk -v secs="$((seconds - 4))" -v hz="$(getconf CLK_TCK)" '
            FNR == NR { before[$1] = $3; next }
            $1 in before {
                used = $3 - before[$1]
                if ($2 == "postgres") kind = "postgres"
                else if ($2 ~ /^deploybot-load/) kind = "loadgen"
                else if ($2 == "deploybot") kind = "controllers"
                else kind = "other"
                cpu[kind] += used
            }
            END {
                printf "  CPU (%% of one core, 2 cores = 200%%):"
                split("postgres controllers loadgen other", kinds, " ")
                for (i = 1; i <= 4; i++) printf " %s %.0f%%", kinds[i], 100 * cpu[kinds[i]] / hz / secs
                printf "\n"
            }' "$work/cpu.0" "$work/cpu.1"
    ) &
    sampler=$!
}
both() { # files: the sum of their rates
    cat "$@" | grep -o '= [0-9]*' | tr -dc '0-9\n' | paste -sd+ | bc
}

cluster() {
    echo "== two controllers on one PostgreSQL database (fresh), loads split between them"
    echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    local db="deploybot_bench_$$"
    psql -X -q -d "$pg_url/postgres" -c "CREATE DATABASE $db"
    local a=127.0.0.1:18091 b=127.0.0.1:18092 pids=()
    for instance in $a $b; do
        if curl -sf "http://$instance/health" >/dev/null; then
            echo "something already answers on $instance" >&2
            exit 1
        fi
        local dir
        dir=$(mktemp -d -p "$work")
        RUST_LOG=warn "$bin/deploybot" server --listen "$instance" --data-dir "$dir" \
            --apps "$work/apps.yaml" --database-url "$pg_url/$db?sslmode=disable" 2>>"$dir/server.log" &
        pids+=($!)
        until curl -sf "http://$instance/health" >/dev/null; do
            kill -0 "${pids[-1]}" || { cat "$dir/server.log"; exit 1; }
            sleep 0.1
        done
    done
    echo "== webhooks: unique signed pushes (2 jobs each), 32 connections to each instance"
    for run in $(seq "$runs"); do
        cpu_split
        # Prefixes distinct per run and instance: every push is new.
        "$bin/deploybot-loadgen" --addr "$a" --connections 32 --duration "${seconds}s" \
            webhooks --prefix "run$run-a" > "$work/wa" &
        local other=$!
        "$bin/deploybot-loadgen" --addr "$b" --connections 32 --duration "${seconds}s" \
            webhooks --prefix "run$run-b" > "$work/wb"
        wait "$other" "$sampler" || true
        cat "$work/wa" "$work/wb"
        echo "  both: $(both "$work/wa" "$work/wb")/s (load average $(cut -d' ' -f1-3 /proc/loadavg))" \
            | tee -a "$work/webhooks"
        grep -o 'p99 [0-9.]*' "$work/wa" "$work/wb" | cut -d' ' -f2 | sort -n | tail -1 >> "$work/webhooks-p99"
    done
    echo "  median of $runs: $(grep -o 'both: [0-9]*' "$work/webhooks" | tr -dc '0-9\n' | median)/s," \
         "p99 (the worse instance) $(median < "$work/webhooks-p99") ms"
    echo "== heartbeats: 500 agents on each instance, 32 connections to each"
    for _ in $(seq "$runs"); do
        cpu_split
        "$bin/deploybot-loadgen" --addr "$a" --connections 32 --duration "${seconds}s" heartbeats --agents 500 --prefix bench-a > "$work/ha" &
        local other=$!
        "$bin/deploybot-loadgen" --addr "$b" --connections 32 --duration "${seconds}s" heartbeats --agents 500 --prefix bench-b > "$work/hb"
        wait "$other" "$sampler" || true
        cat "$work/ha" "$work/hb"
        echo "  both: $(both "$work/ha" "$work/hb")/s" | tee -a "$work/heartbeats"
    done
    echo "  median of $runs: $(grep -o 'both: [0-9]*' "$work/heartbeats" | tr -dc '0-9\n' | median)/s"
    echo "== dispatch across instances: 100 agents long-poll A, pushes go to B"
    for _ in $(seq "$runs"); do
        "$bin/deploybot-loadgen" --addr "$a" dispatch --push-addr "$b" | tee -a "$work/cluster-dispatch"
    done
    echo "  median of $runs: p50 $(results "$work/cluster-dispatch" | grep -o 'p50 [0-9.]*' | cut -d' ' -f2 | median) ms," \
         "p99 $(results "$work/cluster-dispatch" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2 | median) ms"
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

soak() {
    local minutes=${SOAK_MINUTES:-60}
    echo "== soak: $minutes minutes of 20 agents running every job (5 lines of output each),"
    echo "   a push every 2 s (20 jobs each), a log-stream client every 5 s for 3 s"
    start_server
    sleep 1
    echo "  RSS at start: $(rss "$server")"
    "$bin/deploybot-loadgen" --addr "$addr" --duration "$((minutes * 60))s" soak \
        --report-every 60s > "$work/soak" &
    local soaker=$! minute=0
    while kill -0 "$soaker" 2>/dev/null; do
        sleep 60
        minute=$((minute + 1))
        # Every minute for the record; the marks BENCHMARKS.md quotes on screen.
        echo "$minute $(rss "$server")" >> "$work/soak-rss"
        case $minute in 1|5|10|20|30|40|50|60|90|120) echo "  minute $minute: RSS $(rss "$server"); $(tail -1 "$work/soak")";; esac
    done
    wait "$soaker"
    tail -2 "$work/soak"
    echo "  RSS right after the load: $(rss "$server")"
    sleep 120
    echo "  RSS two minutes later, idle: $(rss "$server")"
    echo "  database: $(du -h "$data/deploybot.db" | cut -f1), $(sqlite3 "$data/deploybot.db" "SELECT count(*) FROM jobs" 2>/dev/null || echo "?") jobs"
    stop_server
}

for scenario in "${scenarios[@]}"; do "$scenario"; done
