#!/usr/bin/env bash
# benches/load/memory.sh — P6, memory: the RSS of an idle gateway, what 1,000 idle
# keep-alive client connections add (HTTP/1.1 and h2c, each after one request) for
# Sluice and nginx side by side, and what one warm plugin instance adds (the tally
# example in Rust, Python and JS, made at load with `limits.warm`).
#
#   benches/load/memory.sh                     # everything
#   PARTS=connections benches/load/memory.sh   # or PARTS=instances
#
# Knobs: PARTS="connections instances", CONNS=1000, INSTANCES=100 (Rust; Python and JS
# use INSTANCES_INTERPRETED=20), LANGS="rust python js", BASE_PORT=19280, SETTLE=6
# (seconds before a reading: an idle HTTP/1 connection parks after a quiet tick, 2.5-5 s
# with the default timeouts, and the freed memory goes back once a second after), SLUICE_BIN (default target/release/sluice),
# SKIP_BUILD=1, KEEP_TMP=1. Components come from target/lang-plugins/<lang>.wasm
# (benches/languages.sh builds them) or are built here with `sluice plugin new`.
# Needs: python3 (the clients), nginx (apt-get install -y nginx), the language
# toolchains of LANGS (see the README's plugin table).
set -euo pipefail

PARTS=${PARTS:-"connections instances"}
CONNS=${CONNS:-1000}
INSTANCES=${INSTANCES:-100}
INSTANCES_INTERPRETED=${INSTANCES_INTERPRETED:-20}
LANGS=${LANGS:-"rust python js"}
BASE_PORT=${BASE_PORT:-19280}
SETTLE=${SETTLE:-6}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NICE=0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SLUICE_BIN=${SLUICE_BIN:-$TARGET_DIR/release/sluice}

log() { printf '[memory] %s\n' "$*" >&2; }
die() { printf '[memory] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=common.sh
source "$HERE/common.sh"

need python3 "apt-get install -y python3"
[[ " $PARTS " == *" connections "* ]] && need nginx "apt-get install -y nginx"
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$REPO" && cargo build --release -p sluice)
fi
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
start_tmp memory
PORT=$BASE_PORT

# Opens N connections to PORT, makes one request on each (HTTP/1.1, or h2c with
# prior knowledge), reads the whole response, prints "holding" and keeps them open
# until a line arrives on stdin.
cat >"$TMP/idle.py" <<'EOF'
import socket, struct, sys
port, n, proto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def h1(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(4096)

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def h2(s):
    # :method GET, :scheme http, :path / (static table), :authority bench (literal).
    block = bytes([0x82, 0x86, 0x84, 0x41, 5]) + b"bench"
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("closed before the response ended")
            buf += chunk
        length = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + length:]
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))  # SETTINGS ack
        if stream == 1 and kind in (0, 1) and flags & 1:
            return

socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    (h1 if proto == "http1" else h2)(s)
    socks.append(s)
print("holding", flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
EOF

start_sluice() { # start_sluice CONFIG → SLUICE_PID, listening on $PORT (compiling a
    # Python or JS component on the first load takes a while: up to 3 minutes)
    "$SLUICE_BIN" run --config "$1" --workers 1 --no-watch >"$TMP/sluice.log" 2>&1 &
    SLUICE_PID=$!
    PIDS+=("$SLUICE_PID")
    wait_port "$PORT" sluice "$SLUICE_PID" 180
}

stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

if [[ " $PARTS " == *" connections "* ]]; then
    printf '\n| peer | protocol | RSS idle | RSS holding %s idle connections | per connection |\n|---|---|---:|---:|---:|\n' "$CONNS"
    for peer in sluice nginx; do
        for proto in http1 http2; do
            PORT=$((PORT + 1))
            case $peer in
                sluice)
                    cat >"$TMP/conn.yaml" <<EOF
version: 1
server: { access_log: { enabled: false } }
listeners:
  - name: bench
    address: 127.0.0.1:$PORT
    protocols: [$proto]
    limits: { max_connections: $((CONNS + 100)), idle_timeout: 10m }
routes:
  - name: ok
    match: { path_prefix: / }
    target: { static: { body: ok } }
EOF
                    start_sluice "$TMP/conn.yaml"
                    pid=$SLUICE_PID measured=$SLUICE_PID
                    ;;
                nginx)
                    mkdir -p "$TMP/nginx"
                    h2=""
                    [[ $proto == http2 ]] && h2=" http2"
                    cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx-$PORT.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $((CONNS * 2 + 100)); }
http {
  access_log off;
  keepalive_timeout 10m;
  http2_idle_timeout 10m;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  server {
    listen 127.0.0.1:$PORT$h2;
    location / { return 200 "ok"; }
  }
}
EOF
                    nginx -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
                    pid=$!
                    PIDS+=("$pid")
                    wait_port "$PORT" nginx "$pid"
                    sleep 0.3
                    measured=$(pgrep -P "$pid" | head -1) # the worker holds the connections
                    ;;
            esac
            sleep "$SETTLE"
            idle=$(rss_kb "$measured")
            coproc CLIENTS { python3 "$TMP/idle.py" "$PORT" "$CONNS" "$proto"; }
            read -r _ <&"${CLIENTS[0]}"
            sleep "$SETTLE"
            holding=$(rss_kb "$measured")
            echo go >&"${CLIENTS[1]}"
            wait "$CLIENTS_PID" 2>/dev/null || true
            stop "$pid"
            printf '| %s | %s | %.1f MB | %.1f MB | %.2f KiB |\n' "$peer" "$proto" \
                "$(echo "$idle / 1024" | bc -l)" "$(echo "$holding / 1024" | bc -l)" \
                "$(echo "($holding - $idle) / $CONNS" | bc -l)"
        done
    done
fi

if [[ " $PARTS " == *" instances "* ]]; then
    out="$TARGET_DIR/lang-plugins"
    mkdir -p "$out"
    for lang in $LANGS; do
        [[ -f $out/$lang.wasm ]] && continue
        work=$(mktemp -d "$TMP/build-$lang.XXXX")/tally
        "$SLUICE_BIN" plugin new tally --lang "$lang" --example tally --dir "$work" >/dev/null
        if (cd "$work" && OUT="$work/build" CARGO_TARGET_DIR="$TARGET_DIR/tmp/example-plugins" ./build.sh \
            >"$work/build.log" 2>&1); then
            cp "$work/build/tally.wasm" "$out/$lang.wasm"
        else
            log "$lang: build failed or toolchain missing (see $work/build.log); skipped"
        fi
    done
    printf '\n| plugin | component | RSS, warm: 1 | RSS, warm: 1 + N | N | per warm instance |\n|---|---:|---:|---:|---:|---:|\n'
    for lang in $LANGS; do
        [[ -f $out/$lang.wasm ]] || continue
        n=$INSTANCES
        [[ $lang != rust ]] && n=$INSTANCES_INTERPRETED
        mkdir -p "$TMP/plugins-$lang"
        cp "$out/$lang.wasm" "$TMP/plugins-$lang/tally.wasm"
        readings=()
        # The first run compiles the component into the cache (and keeps the
        # compiler's memory): it is not measured.
        for warm in 1 1 $((n + 1)); do
            PORT=$((PORT + 1))
            cat >"$TMP/inst.yaml" <<EOF
version: 1
server: { access_log: { enabled: false } }
listeners:
  - name: bench
    address: 127.0.0.1:$PORT
plugins: { dir: $TMP/plugins-$lang, cache_dir: $TMP/cache }
routes:
  - name: r
    match: { path_prefix: / }
    target: { static: { body: ok } }
    plugins:
      - { name: tally, grants: { kv: true }, config: { header: x-team }, limits: { warm: $warm } }
EOF
            start_sluice "$TMP/inst.yaml"
            sleep "$SETTLE"
            readings+=("$(rss_kb "$SLUICE_PID")")
            stop "$SLUICE_PID"
        done
        printf '| %s | %d KiB | %.1f MB | %.1f MB | %d | %.2f MiB |\n' "$lang" $(($(stat -c %s "$out/$lang.wasm") / 1024)) \
            "$(echo "${readings[1]} / 1024" | bc -l)" "$(echo "${readings[2]} / 1024" | bc -l)" "$n" \
            "$(echo "(${readings[2]} - ${readings[1]}) / 1024 / $n" | bc -l)"
    done
fi
