#!/usr/bin/env bash
# Schemathesis against the controller's own OpenAPI document with every
# check, valid and invalid data, and the stateful phase (which follows the
# document's links), once as an admin and once as a read-only token. Uses
# the binary `cargo test` built; installs schemathesis from PyPI if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/deploybot
[ -x "$bin" ] || cargo build --locked -p deploybot
command -v st >/dev/null 2>&1 || python3 -m pip install -q schemathesis

work=$(mktemp -d)
server=""
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cp examples/apps.yaml "$work/apps.yaml"
admin=$(openssl rand -hex 32)
# The log line `listening on http://ADDR` tells the port. The fuzzer sends
# wrong tokens on purpose, many per minute: the per-address limit would
# answer them 429 where the check expects 401.
DEPLOYBOT_AUTH_FAILURES_PER_MINUTE=0 DEPLOYBOT_ADMIN_TOKEN=$admin DEPLOYBOT_ENROLLMENT_TOKEN=$(openssl rand -hex 32) \
DEPLOYBOT_WEBHOOK_SECRET=$(openssl rand -hex 16) RUST_LOG=warn,deploybot=info \
    "$bin" server --listen 127.0.0.1:0 --data-dir "$work/data" --apps "$work/apps.yaml" \
    2> "$work/server.log" &
server=$!
for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | cut -d' ' -f3) || true
    [ -n "${url:-}" ] && break
    kill -0 "$server" || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
[ -n "${url:-}" ] || { echo "the server did not start"; cat "$work/server.log"; exit 1; }

read_token=$(curl -fsS -X POST "$url/v1/tokens" -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/json' -d '{"name": "schemathesis-read", "role": "read"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

fuzz() {
    local who=$1 token=$2
    echo "== as $who"
    # The live log stream never ends by design: it is left out.
    st --config-file .ci/schemathesis.toml run "$url/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks all \
        --continue-on-failure \
        --phases examples,coverage,fuzzing,stateful \
        --exclude-path /v1/logs/stream \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
        --workers 2 \
        --request-timeout 10 \
        --seed 1 \
        --no-color
}
status=0
fuzz admin "$admin" || status=1
fuzz read "$read_token" || status=1
exit $status
