#!/usr/bin/env bash
# The production shape on one machine, in the foreground (Ctrl-C stops all):
# a 3-node nats-server cluster (JetStream, every stream and bucket R3),
# PostgreSQL, SeaweedFS (S3 media), 2 workers, 2 edges, and HAProxy as the one
# address for clients. Every process runs under a supervisor loop that
# restarts it a second after it exits, as systemd's Restart=always would: kill
# any one of them and the rest carry on while it comes back.
#
# Environment (all optional):
#   MSGR_CLUSTER_DIR        data, logs and pid files (default ./data/cluster)
#   MSGR_CLUSTER_PORT_BASE  added to every port, to run a second cluster beside
#                           one (the chaos suite in `just test` does)
#   MSGR_BIN_DIR            where msgr-worker and msgr-edge are (target/release)
#   MSGR_CLUSTER_READY_FILE touched once the cluster answers, for scripts
#   MSGR_CLUSTER_CGROUP     a cgroup v2 directory: NATS node n runs in its
#                           nats-<n> child, so that a firewall rule can cut
#                           that node's sockets off (`just chaos` does)
#
# Ports (plus MSGR_CLUSTER_PORT_BASE): clients 8090 (HAProxy; stats on 8404),
# edges 8081-8082, worker metrics 9465-9466, NATS 4231-4233 (routes
# 6231-6233, monitoring 8231-8233), PostgreSQL 5433, S3 8343.
# Pid files: $MSGR_CLUSTER_DIR/pids/<name>.pid; logs: $MSGR_CLUSTER_DIR/logs.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
data=${MSGR_CLUSTER_DIR:-$root/data/cluster}
base=${MSGR_CLUSTER_PORT_BASE:-0}
bin=${MSGR_BIN_DIR:-$root/target/release}
mkdir -p "$data"
data=$(cd "$data" && pwd)
mkdir -p "$data/logs" "$data/pids" "$data/conf"
rm -f "$data/stopping" "$data/pids/"*.pid

p() { echo $(($1 + base)); }
log() { echo "$(date +%T) $*" | tee -a "$data/logs/cluster.log" >&2; }

for tool in nats-server weed haproxy; do
  command -v "$tool" >/dev/null || { echo "cluster: $tool not found (just tools / just haproxy)" >&2; exit 1; }
done
pgbin=${MSGR_POSTGRES_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$pgbin/postgres" ] || { echo "cluster: PostgreSQL not found (just postgres)" >&2; exit 1; }
for b in msgr-worker msgr-edge; do
  [ -x "$bin/$b" ] || { echo "cluster: $bin/$b not built (just build)" >&2; exit 1; }
done

# PostgreSQL refuses to run as root: run it as the postgres system user.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  chmod a+x "$data" # so that user can reach its directories (mktemp makes 0700)
fi

# --- configuration files, with the ports shifted by the base -------------
shift_ports() { # file -> stdout
  local sed_args=()
  for port in 4231 4232 4233 6231 6232 6233 8231 8232 8233 8090 8404 8081 8082; do
    sed_args+=(-e "s/\\b$port\\b/$(p $port)/g")
  done
  sed "${sed_args[@]}" "$1"
}
for n in 1 2 3; do
  shift_ports "$root/nats/conf/cluster-$n.conf" \
    | sed -e "s|\"./data/cluster/nats-$n\"|\"$data/nats-$n\"|" >"$data/conf/nats-$n.conf"
done
# Each role its own NATS user with the least it needs; passwords made once,
# owner-only, under $data/secrets (infra/nats_auth.py).
python3 "$root/infra/nats_auth.py" "$data/secrets" "$data"/conf/nats-{1,2,3}.conf
shift_ports "$root/infra/cluster/haproxy.cfg" >"$data/conf/haproxy.cfg"
cat >"$data/conf/s3.json" <<'JSON'
{"identities":[{"name":"msgr","credentials":[{"accessKey":"msgr","secretKey":"msgr-cluster-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON

nats_urls="nats://127.0.0.1:$(p 4231),nats://127.0.0.1:$(p 4232),nats://127.0.0.1:$(p 4233)"
pg_url="postgres://postgres@127.0.0.1:$(p 5433)/msgr"
s3_url="http://127.0.0.1:$(p 8343)"

# --- supervision -----------------------------------------------------------
sups=()
supervise() { # name command... ; restarts the command a second after it exits
  local name=$1; shift
  (
    child=
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM
    while :; do
      "$@" >>"$data/logs/$name.log" 2>&1 &
      child=$!
      echo "$child" >"$data/pids/$name.pid"
      wait "$child" && code=0 || code=$?
      [ -f "$data/stopping" ] && exit 0
      echo "$(date +%T) $name exited ($code); restarting in 1 s" >>"$data/logs/cluster.log"
      sleep 1
    done
  ) &
  sups+=($!)
}

stop() {
  trap - INT TERM EXIT
  touch "$data/stopping"
  log "stopping"
  local pids=()
  for f in "$data"/pids/*.pid; do
    [ -f "$f" ] && pids+=("$(cat "$f")")
  done
  # PostgreSQL's own pid file names the postmaster (a fast shutdown on TERM).
  [ -f "$data/pg/postmaster.pid" ] && pids+=("$(head -n1 "$data/pg/postmaster.pid")")
  kill "${pids[@]}" 2>/dev/null || true
  for s in "${sups[@]}"; do kill "$s" 2>/dev/null || true; done
  # Ten seconds to exit cleanly, then SIGKILL (weed can take its time).
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
  # The idle loop's sleep too, or `wait` would wait for it.
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${MSGR_CLUSTER_CGROUP:-}" ]; then
    rmdir "$MSGR_CLUSTER_CGROUP"/nats-* "$MSGR_CLUSTER_CGROUP" 2>/dev/null || true
  fi
  rm -f "$data/pids/"*.pid "${MSGR_CLUSTER_READY_FILE:-/nonexistent}"
  log "msgr cluster stopped"
}
# A signal stops everything and ends the script (the loop at the end would
# otherwise carry on once the handler returns).
trap 'stop; exit 0' INT TERM
trap stop EXIT

ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
wait_for() { # what url seconds
  for _ in $(seq $(($3 * 10))); do ready "$2" && return 0; sleep 0.1; done
  log "$1 did not answer at $2 within $3 s; see $data/logs"; return 1
}

# --- NATS ------------------------------------------------------------------
# In a cgroup of its own when asked: a socket belongs to the cgroup its
# process was in when it opened it, so the node starts there (every restart).
in_cgroup=()
for n in 1 2 3; do
  if [ -n "${MSGR_CLUSTER_CGROUP:-}" ]; then
    mkdir -p "$MSGR_CLUSTER_CGROUP/nats-$n"
    in_cgroup=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$MSGR_CLUSTER_CGROUP/nats-$n")
  fi
  supervise "nats-$n" "${in_cgroup[@]}" nats-server -c "$data/conf/nats-$n.conf"
done
for n in 1 2 3; do
  wait_for "nats-$n" "http://127.0.0.1:$(p 823$n)/healthz?js-enabled-only=true" 30
done

# --- PostgreSQL --------------------------------------------------------------
if [ ! -f "$data/pg/PG_VERSION" ]; then
  mkdir -p "$data/pg" "$data/pgsock"
  [ ${#as_pg[@]} -gt 0 ] && chown postgres:postgres "$data/pg" "$data/pgsock"
  "${as_pg[@]}" "$pgbin/initdb" -D "$data/pg" -U postgres --auth=trust -E UTF8 --locale=C >"$data/logs/initdb.log" 2>&1
fi
mkdir -p "$data/pgsock"
[ ${#as_pg[@]} -gt 0 ] && chown postgres:postgres "$data/pgsock"
supervise pg "${as_pg[@]}" "$pgbin/postgres" -D "$data/pg" -p "$(p 5433)" -k "$data/pgsock" \
  -c listen_addresses=127.0.0.1 -c max_connections=200
for _ in $(seq 300); do
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$(p 5433)" -U postgres -d postgres && break; sleep 0.1
done
"$pgbin/psql" -h 127.0.0.1 -p "$(p 5433)" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'msgr'" | grep -q 1 \
  || "$pgbin/createdb" -h 127.0.0.1 -p "$(p 5433)" -U postgres msgr

# --- SeaweedFS (S3) ----------------------------------------------------------
mkdir -p "$data/weed"
supervise weed weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$data/weed" \
  -master.port="$(p 9433)" -master.port.grpc="$(p 19433)" -master.volumeSizeLimitMB=64 \
  -volume.port="$(p 8433)" -volume.port.grpc="$(p 18433)" -volume.max=16 \
  -filer -filer.port="$(p 8898)" -filer.port.grpc="$(p 18898)" \
  -s3 -s3.port="$(p 8343)" -s3.port.grpc="$(p 18343)" -s3.port.iceberg=0 -s3.port.lance=0 \
  -s3.config="$data/conf/s3.json"
# The bucket is a directory under /buckets on the filer (a bare POST, no
# content type, makes it); then wait for the S3 gateway to listen.
bucket_made() {
  python3 - "$(p 8898)" "$(p 8343)" <<'PY' 2>/dev/null
import socket, sys
filer, s3 = int(sys.argv[1]), int(sys.argv[2])
with socket.create_connection(("127.0.0.1", filer), 2) as c:
    c.sendall(b"POST /buckets/msgr-media/ HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    status = c.recv(64).split()[1]
assert status.startswith(b"2") or status == b"409", status  # 409: it exists
socket.create_connection(("127.0.0.1", s3), 2).close()
PY
}
for _ in $(seq 600); do bucket_made && break; sleep 0.1; done
bucket_made || { log "SeaweedFS did not come up; see $data/logs/weed.log"; exit 1; }

# --- workers and edges ---------------------------------------------------
export MSGR_NATS__URL=$nats_urls MSGR_STORE__URL=$pg_url MSGR_MEDIA__ENDPOINT=$s3_url
export MSGR_DATA_DIR=$data RUST_LOG=${RUST_LOG:-info,async_nats=warn}
for n in 1 2; do
  supervise "worker-$n" env MSGR_INSTANCE_ID="worker-$n" MSGR_METRICS_LISTEN="127.0.0.1:$(p 946$((n + 4)))" \
    MSGR_NATS__USER=worker MSGR_NATS__PASSWORD_FILE="$data/secrets/worker.pass" \
    "$bin/msgr-worker" --config "$root/infra/cluster/worker.toml" all
done
for n in 1 2; do
  supervise "edge-$n" env MSGR_EDGE_ID="edge-$n" MSGR_LISTEN="127.0.0.1:$(p 808$n)" \
    MSGR_NATS__USER=edge MSGR_NATS__PASSWORD_FILE="$data/secrets/edge.pass" \
    "$bin/msgr-edge" --config "$root/infra/cluster/edge.toml"
done
for n in 1 2; do wait_for "edge-$n" "http://127.0.0.1:$(p 808$n)/healthz" 120; done

# --- the load balancer -------------------------------------------------------
supervise haproxy haproxy -db -f "$data/conf/haproxy.cfg"
wait_for haproxy "http://127.0.0.1:$(p 8090)/healthz" 30
[ -n "${MSGR_CLUSTER_READY_FILE:-}" ] && touch "$MSGR_CLUSTER_READY_FILE"
log "msgr cluster is up: http://127.0.0.1:$(p 8090)  (HAProxy stats :$(p 8404); logs $data/logs; Ctrl-C stops)"

# Runs until interrupted; supervisors keep every process alive meanwhile.
while :; do sleep 3600 & wait $! || true; done
