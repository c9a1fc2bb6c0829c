#!/usr/bin/env bash
# benches/load/instructions.sh — user-space instructions per proxied request, counted
# by valgrind's callgrind: the P1 path (one route, empty chain, bench-upstream behind
# it) for Sluice and for nginx. A count, not a time: it does not move with the other
# work on a shared machine, so an A/B of two builds reads in one run what run.sh's
# CPU-µs needs many alternated runs for. It says nothing of the kernel's share (the
# same system calls for both peers, see BENCHMARKS.md P1) or of cache misses, and
# valgrind counts a large memcpy byte by byte, so a removed copy shows larger here
# than in time.
#
#   benches/load/instructions.sh                         # sluice (target/release) and nginx
#   SLUICE_BIN=/tmp/old/sluice PEERS=sluice benches/load/instructions.sh
#   REQUESTS=50000 benches/load/instructions.sh
#
# What it does, all on 127.0.0.1: starts bench-upstream, then each peer under
# `valgrind --tool=callgrind`; warms it up with WARMUP requests (oha -c8), zeroes the
# counters (callgrind_control -z), sends REQUESTS more, dumps (callgrind_control -d)
# and prints the instructions of that stretch divided by REQUESTS. Every request must
# answer 200. The dumps stay under OUT_DIR for callgrind_annotate (inclusive costs by
# function: `callgrind_annotate --inclusive=yes FILE`).
#
# Needs: valgrind (apt-get install -y valgrind), oha (cargo install oha), curl, nginx
# for the nginx peer. SKIP_BUILD=1 uses the binaries as they are.
set -euo pipefail

log() { echo "instructions.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}
NICE=${NICE:-0}
KEEP_TMP=${KEEP_TMP:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

PEERS=${PEERS:-"sluice nginx"}
REQUESTS=${REQUESTS:-20000}
WARMUP=${WARMUP:-3000}
BASE_PORT=${BASE_PORT:-19180}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
OUT_DIR=${OUT_DIR:-$TARGET_DIR/instructions/$(date +%Y%m%d-%H%M%S)}
UPSTREAM_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
SLUICE_PORT=$((BASE_PORT + 2))

need valgrind "apt-get install -y valgrind"
need callgrind_control "apt-get install -y valgrind"
need curl "apt-get install -y curl"
command -v oha >/dev/null 2>&1 || PATH="$HOME/.cargo/bin:$PATH"
need oha "cargo install oha"
for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$SLUICE_PORT"; do
    ! port_open "$port" || die "127.0.0.1:$port is taken (another run?); set BASE_PORT"
done

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (release): sluice, bench-upstream"
    (cd "$REPO" && cargo build --release -p sluice -p sluice-benches --bin sluice --bin bench-upstream)
fi
SLUICE_BIN=${SLUICE_BIN:-$TARGET_DIR/release/sluice}
UPSTREAM_BIN=$TARGET_DIR/release/bench-upstream
[[ -x $SLUICE_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing under $TARGET_DIR/release"

start_tmp sluice-instructions
mkdir -p "$OUT_DIR"
sed -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@SLUICE_PORT@|$SLUICE_PORT|g" \
    -e "s|@SLUICE_ACCESS_LOG@|false|g" -e "s|@SLUICE_CALL_LOG@|# no call log|g" \
    "$HERE/sluice.yaml.in" >"$TMP/sluice.yaml"
chmod 755 "$TMP"
mkdir -p "$TMP"/nginx-{client-body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@WORKERS@|1|g" -e "s|@NGINX_ACCESS_LOG@|off|g" -e "s|master_process on;|master_process off;|" \
    "$HERE/nginx.conf.in" >"$TMP/nginx.conf"

"${PRIO[@]}" "$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" --threads 1 >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream "$!"

count() { # count PEER PORT CMD... — prints instructions per request
    local peer=$1 port=$2 pid dump ir ok
    shift 2
    "${PRIO[@]}" valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/$peer.%p" "$@" \
        >"$OUT_DIR/$peer.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$peer" "$pid" 120
    oha -n "$WARMUP" -c 8 --no-tui "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    oha -n "$REQUESTS" -c 8 --no-tui "http://127.0.0.1:$port/" >"$OUT_DIR/$peer.oha"
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ok=$(awk '/\[200\]/ { print $2 }' "$OUT_DIR/$peer.oha")
    [[ $ok == "$REQUESTS" ]] || die "$peer: $ok of $REQUESTS requests answered 200 (see $OUT_DIR/$peer.oha)"
    dump=$(ls "$OUT_DIR/$peer.$pid".*1 2>/dev/null | head -1)
    [[ -n $dump ]] || die "$peer: no callgrind dump in $OUT_DIR"
    ir=$(awk '/^summary:/ { print $2 }' "$dump")
    echo "| $peer | $REQUESTS | $((ir / REQUESTS)) |"
}

echo "| peer | requests | instructions per request |"
echo "|---|---:|---:|"
for peer in $PEERS; do
    case $peer in
        sluice) count sluice "$SLUICE_PORT" "$SLUICE_BIN" run --config "$TMP/sluice.yaml" --workers 1 --no-watch ;;
        nginx)
            need nginx "apt-get install -y nginx"
            count nginx "$NGINX_PORT" nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"
            ;;
        *) die "unknown peer '$peer' (sluice, nginx)" ;;
    esac
done
log "callgrind dumps in $OUT_DIR"
