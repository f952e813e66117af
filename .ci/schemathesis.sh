#!/usr/bin/env bash
# Schemathesis against the controller's own OpenAPI document, as an admin:
# every operation gets generated requests; no answer may be a 5xx or break
# the documented schema. Uses the binary `cargo test` built; installs
# schemathesis from PyPI if missing.
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
# The log line `listening on http://ADDR` tells the port.
DEPLOYBOT_ADMIN_TOKEN=$admin DEPLOYBOT_ENROLLMENT_TOKEN=$(openssl rand -hex 32) \
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

# The live log stream never ends by design: it is left out.
st run "$url/openapi.json" \
    --header "Authorization: Bearer $admin" \
    --checks not_a_server_error,response_schema_conformance,content_type_conformance \
    --exclude-path /v1/logs/stream \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
    --workers 2 \
    --request-timeout 10 \
    --seed 1 \
    --no-color
