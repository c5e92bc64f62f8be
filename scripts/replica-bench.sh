#!/bin/bash
# Service load: two `earmark serve` replicas sharing one PostgreSQL registry
# and one index directory, against one server on SQLite, on this machine.
#
#   scripts/replica-bench.sh [EARMARK_BINARY] [SECONDS] [CONCURRENCY] [ROUNDS]
#
# Starts a throwaway PostgreSQL cluster (initdb into a temporary directory,
# run as `nobody` when this runs as root, loopback port), seeds the four
# reference clips of test-audio/refs into a PostgreSQL-backed data directory
# and a SQLite one, and runs `earmark bench serve` (Screen with audio, then
# ScreenFingerprints) against each set-up, alternating, ROUNDS times:
#
#   sqlite x1      one server, SQLite registry, --workers 2
#   postgres x1    one server, PostgreSQL registry, --workers 2
#   postgres x2    two replicas on one index directory, --workers 1 each,
#                  the bench's callers spread round-robin over both
#
# Servers, bench client and database share the machine's cores. Everything
# it started is stopped by PID at the end and the temporary directory removed.
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(realpath "${1:-target/release/earmark}")
SECONDS_PER_RUN=${2:-20}
CONCURRENCY=${3:-8}
ROUNDS=${4:-2}
PG_BIN=${EARMARK_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL server binaries (set EARMARK_PG_BIN or run scripts/setup.sh)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/earmark-replica-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_PID=
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PG_PID" ]; then
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- PostgreSQL: a throwaway cluster on a loopback port.
PRIV=()
mkdir -p "$WORK/pg"
if [ "$(id -u)" = 0 ]; then
  chown nobody:nogroup "$WORK/pg"
  PRIV=(setpriv --reuid nobody --regid nogroup --clear-groups)
fi
"${PRIV[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
PG_PORT=$(free_port)
"${PRIV[@]}" "$PG_BIN/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -k "$WORK/pg" \
  -c listen_addresses=127.0.0.1 -c max_connections=100 >"$WORK/pg/server.log" 2>&1 &
PG_PID=$!
for _ in $(seq 600); do
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$WORK/pg/server.log" >&2; exit 2; }
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres earmark
URL="postgres://postgres@127.0.0.1:$PG_PORT/earmark"

# ---- Data: the four reference clips, with the consents of the service tests.
seed() { # seed DATA_DIR [--registry URL]
  local data=$1; shift
  local works=(
    "wesnoth-heroes-rite opted-out"
    "wesnoth-northerners opted-in"
    "fof-muldjord-armygeddon -"
    "fof-sectoid-war-of-freedom opted-in"
  )
  for w in "${works[@]}"; do
    read -r id consent <<<"$w"
    local extra=()
    [ "$consent" != - ] && extra=(--consent "$consent")
    "$B" --data "$data" "$@" works add "test-audio/refs/$id.ogg" --id "$id" \
      --holder "Holder" "${extra[@]}" >/dev/null
  done
  "$B" --data "$data" "$@" keys create --role screener --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])'
}
KEY_SQLITE=$(seed "$WORK/sqlite")
KEY_PG=$(seed "$WORK/shared" --registry "$URL")

# ---- Servers.
# Starts a server in the background (its PID in this shell's list), waits
# until it reports SERVING, and stores its port in VAR.
start() { # start VAR NAME DATA WORKERS [--registry URL]
  local var=$1; shift
  local name=$1 data=$2 workers=$3; shift 3
  local port
  port=$(free_port)
  "$B" --data "$data" "$@" serve --listen "127.0.0.1:$port" --workers "$workers" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do
    grep -q "SERVING" "$WORK/$name.log" && break
    sleep 0.1
  done
  grep -q "SERVING" "$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 2; }
  printf -v "$var" '%s' "$port"
}
start P_SQLITE sqlite "$WORK/sqlite" 2
start P_PG1 pg1 "$WORK/shared" 2 --registry "$URL"
start P_A replica-a "$WORK/shared" 1 --registry "$URL"
start P_B replica-b "$WORK/shared" 1 --registry "$URL"

# ---- Runs, alternating the set-ups.
RESULTS="$WORK/results.jsonl"
run() { # run SETUP MODE KEY ADDR...
  local setup=$1 mode=$2 key=$3; shift 3
  local addrs=() flags=()
  for a in "$@"; do addrs+=(--addr "127.0.0.1:$a"); done
  [ "$mode" = fingerprints ] && flags=(--fingerprints)
  "$B" bench serve "${addrs[@]}" --api-key "$key" --concurrency "$CONCURRENCY" \
    --duration "$SECONDS_PER_RUN" --json "${flags[@]}" |
    python3 -c 'import json, sys; r = json.load(sys.stdin); r["setup"] = sys.argv[1]; print(json.dumps(r))' "$setup" >>"$RESULTS"
}
uptime
for round in $(seq "$ROUNDS"); do
  for mode in audio fingerprints; do
    run "sqlite x1" "$mode" "$KEY_SQLITE" "$P_SQLITE"
    run "postgres x1" "$mode" "$KEY_PG" "$P_PG1"
    run "postgres x2" "$mode" "$KEY_PG" "$P_A" "$P_B"
  done
  uptime
done

python3 - "$RESULTS" "$CONCURRENCY" "$SECONDS_PER_RUN" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{len(rows)} runs, --concurrency {sys.argv[2]}, --duration {sys.argv[3]} s each\n")
print("| set-up | mode | requests | errors | requests/s | p50 ms | p99 ms | requests per server |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for r in rows:
    lat = r["latency_ms"]
    print(f"| {r['setup']} | {r['mode']} | {r['requests']} | {r['errors']} | "
          f"{r['requests_per_s']:.1f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
          f"{' / '.join(str(n) for n in r['requests_per_addr'])} |")
PY
