#!/usr/bin/env bash
# benches/load/slow-readers.sh — memory under slow readers: CONNS clients each ask a
# proxy for a large response (BODY_BYTES from bench-upstream) and read none of it for
# HOLD seconds, then go away. Prints the proxy's RSS before, while they hold, and
# after they left, per peer, with the per-connection growth.
#
#   benches/load/slow-readers.sh                       # sluice and nginx
#   PEERS=sluice SLUICE_BIN=/tmp/old/sluice benches/load/slow-readers.sh   # A/B a build
#
# Knobs: PEERS="sluice nginx", CONNS=1000, BODY_BYTES=1048576, HOLD=5 (seconds held),
# AFTER=3 (seconds after they left before the last reading), BASE_PORT=19180,
# SLUICE_BIN (default target/release/sluice), SKIP_BUILD=1, KEEP_TMP=1.
# Needs: python3 (the clients), nginx for the nginx peer (apt-get install -y nginx).
set -euo pipefail

PEERS=${PEERS:-"sluice nginx"}
CONNS=${CONNS:-1000}
BODY_BYTES=${BODY_BYTES:-1048576}
HOLD=${HOLD:-5}
AFTER=${AFTER:-3}
BASE_PORT=${BASE_PORT:-19180}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NICE=0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SLUICE_BIN=${SLUICE_BIN:-$TARGET_DIR/release/sluice}
UPSTREAM_BIN=$TARGET_DIR/release/bench-upstream

log() { printf '[slow-readers] %s\n' "$*" >&2; }
die() { printf '[slow-readers] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=common.sh
source "$HERE/common.sh"

need python3 "apt-get install -y python3"
[[ " $PEERS " == *" nginx "* ]] && need nginx "apt-get install -y nginx"
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$REPO" && cargo build --release -p sluice -p sluice-benches --bin sluice --bin bench-upstream)
fi
[[ -x $SLUICE_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing: $SLUICE_BIN, $UPSTREAM_BIN"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_tmp slow-readers
UPSTREAM_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
"$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" --body-bytes "$BODY_BYTES" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream "$!"


cat >"$TMP/clients.py" <<'EOF'
# Opens N connections, sends one GET on each, reads nothing; prints "holding" once all
# are sent, waits for a line on stdin, then closes them all.
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")
    socks.append(s)
print("holding", flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
EOF

printf '| peer | RSS before | RSS holding %s slow readers | per reader | RSS %s s after they left |\n|---|---:|---:|---:|---:|\n' "$CONNS" "$AFTER"
for peer in $PEERS; do
    # Each peer on a port of its own: a stopped peer's port may still be held.
    PROXY_PORT=$((PROXY_PORT + 1))
    case $peer in
        sluice)
            cat >"$TMP/sluice.yaml" <<EOF
version: 1
server: { access_log: { enabled: false } }
listeners:
  - name: bench
    address: 127.0.0.1:$PROXY_PORT
    protocols: [http1]
    limits: { max_connections: $((CONNS + 100)) }
upstreams:
  bench:
    targets: [{ address: 127.0.0.1:$UPSTREAM_PORT }]
    pool: { max_idle_per_target: 64 }
routes:
  - name: bench
    match: { path_prefix: / }
    target: { upstream: bench }
EOF
            "$SLUICE_BIN" run --config "$TMP/sluice.yaml" --workers 1 --no-watch >"$TMP/sluice.log" 2>&1 &
            ;;
        nginx)
            mkdir -p "$TMP/nginx"
            cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $((CONNS * 2 + 100)); }
http {
  access_log off;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  upstream bench { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
            nginx -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
            ;;
        *) die "unknown peer $peer (sluice, nginx)" ;;
    esac
    pid=$!
    PIDS+=("$pid")
    wait_port "$PROXY_PORT" "$peer" "$pid"
    # nginx: measure its worker, where the connections live.
    measured=$pid
    if [[ $peer == nginx ]]; then
        sleep 0.3
        measured=$(pgrep -P "$pid" | head -1)
    fi
    curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/warm" || die "$peer does not answer"
    before=$(rss_kb "$measured")
    coproc CLIENTS { python3 "$TMP/clients.py" "$PROXY_PORT" "$CONNS"; }
    read -r _ <&"${CLIENTS[0]}"
    sleep "$HOLD"
    holding=$(rss_kb "$measured")
    echo go >&"${CLIENTS[1]}"
    wait "$CLIENTS_PID" 2>/dev/null || true
    sleep "$AFTER"
    after=$(rss_kb "$measured")
    per=$(((holding - before) * 1024 / CONNS))
    printf '| %s | %d MB | %d MB | %d KB | %d MB |\n' "$peer" $((before / 1024)) $((holding / 1024)) \
        $((per / 1024)) $((after / 1024))
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 0.5
done
