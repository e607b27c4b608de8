#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (nothing is left running or on disk afterwards).
# Source it, then: pg_cluster_start (exports AGENT_SESSIONS_PG_URL and PG_CLUSTER_DIR) and
# pg_cluster_stop (also run from the caller's EXIT trap). Installs the server with apt if the
# machine has none. The server refuses to run as root, so it runs as the `postgres` user.

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ]; then
    echo "installing the PostgreSQL server (Debian package postgresql)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$bin"
}

pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_cluster_start() {
  # A free port unless one is named (another cluster may be running on this machine).
  local port=${1:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')} bin
  bin=$(pg_bin)
  PG_BIN=$bin
  PG_CLUSTER_DIR=$(mktemp -d /tmp/agent-sessions-pg.XXXXXX)
  chmod 755 "$PG_CLUSTER_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_CLUSTER_DIR"; fi
  pg_as "$bin/initdb" -D "$PG_CLUSTER_DIR/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$PG_CLUSTER_DIR/initdb.log" 2>&1 \
    || { cat "$PG_CLUSTER_DIR/initdb.log" >&2; return 1; }
  # fsync stays on: the durability and crash tests need a server that really syncs.
  pg_as "$bin/pg_ctl" -D "$PG_CLUSTER_DIR/data" -l "$PG_CLUSTER_DIR/log" -w -t 30 \
    -o "-k $PG_CLUSTER_DIR -c listen_addresses=127.0.0.1 -p $port -c max_connections=200" \
    start >/dev/null || { cat "$PG_CLUSTER_DIR/log" >&2; return 1; }
  export PG_BIN PG_CLUSTER_DIR
  export AGENT_SESSIONS_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $AGENT_SESSIONS_PG_URL"
}

pg_cluster_stop() {
  if [ -n "${PG_CLUSTER_DIR:-}" ] && [ -d "$PG_CLUSTER_DIR" ]; then
    pg_as "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_CLUSTER_DIR"
  fi
}
