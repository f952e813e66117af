#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the store's
# tests (user postgres, trust auth on loopback, a database `test` to connect
# to), installing and starting it if needed; then prints the URL to use:
#
#     export DEPLOYBOT_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Idempotent: on a machine where the server already runs it only checks.
# The URL goes to stdout, everything else to stderr. The tests create (and
# drop) a fresh database per test on this server.
set -euo pipefail

host=127.0.0.1
port=5432
url="postgres://postgres@$host:$port/test?sslmode=disable"

say() { echo "postgres.sh: $*" >&2; }

ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$host" -p "$port"; }
answers() { psql -h "$host" -p "$port" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
# As the postgres OS user over the local socket: works before loopback trust does.
as_postgres() { su postgres -s /bin/sh -c "psql -p $port -Atq -d postgres -c \"$1\""; }

if ! ready; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        say "installing PostgreSQL"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
    fi
    say "starting PostgreSQL"
    service postgresql start >&2 || true
    if ! ready; then
        # Without an init system: start each cluster directly.
        pg_lsclusters --no-header | while read -r version cluster _; do
            pg_ctlcluster "$version" "$cluster" start >&2 || true
        done
    fi
    for _ in $(seq 60); do
        ready && break
        sleep 0.5
    done
    if ! ready; then
        say "PostgreSQL does not answer on $host:$port"
        pg_lsclusters >&2 || true
        exit 1
    fi
fi

if ! answers; then
    # A fresh install asks for a password on loopback: this machine's test
    # server trusts it, as the tests expect.
    hba=$(as_postgres "SHOW hba_file")
    say "trusting loopback connections in $hba"
    sed -i "1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust" "$hba"
    as_postgres "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    if ! answers; then
        say "cannot connect as postgres to $host:$port"
        exit 1
    fi
fi

if [ "$(psql -h "$host" -p "$port" -U postgres -d postgres -Atqc \
        "SELECT count(*) FROM pg_database WHERE datname = 'test'")" = 0 ]; then
    say "creating the database test"
    psql -h "$host" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE test" >&2
fi

echo "$url"
