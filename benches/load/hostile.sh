#!/usr/bin/env bash
# benches/load/hostile.sh — what hostile plugins cost the routes next to them. One
# gateway serves /plain (no plugin) and three hostile routes: /loop (a plugin that
# never returns, stopped at its 10 ms deadline), /panic (a plugin that panics) and
# /hog (a plugin that allocates until its memory cap). /plain is measured open-loop
# (oha -q RATE --latency-correction) alone, then again while the hostile routes are
# hammered; the hostile routes' statuses and the gateway's RSS before, during and
# after are printed too.
#
#   benches/load/hostile.sh
#   WORKERS=1 LOOP_RATE=20 benches/load/hostile.sh
#
# Knobs: RATE=2000 (req/s on /plain), LOOP_RATE=50, PANIC_RATE=500, HOG_RATE=20
# (req/s on each hostile route; 0 leaves it out), DURATION=10 (seconds per run),
# ROUNDS=3 (alone/hostile pairs, alternated), CONNS=16, WORKERS=2, DEADLINE=10ms,
# BASE_PORT=19280, SLUICE_BIN (default target/release/sluice), SKIP_BUILD=1,
# KEEP_TMP=1.
# Needs: oha (cargo install oha), python3, the wasm32-wasip2 target (for the test
# plugins, built from tests/plugins).
set -euo pipefail

RATE=${RATE:-2000}
LOOP_RATE=${LOOP_RATE:-50}
PANIC_RATE=${PANIC_RATE:-500}
HOG_RATE=${HOG_RATE:-20}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
WORKERS=${WORKERS:-2}
DEADLINE=${DEADLINE:-10ms}
BASE_PORT=${BASE_PORT:-19280}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NICE=0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SLUICE_BIN=${SLUICE_BIN:-$TARGET_DIR/release/sluice}
UPSTREAM_BIN=$TARGET_DIR/release/bench-upstream
WASM_DIR=$TARGET_DIR/wasm-plugins/wasm32-wasip2/release

log() { printf '[hostile] %s\n' "$*" >&2; }
die() { printf '[hostile] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=common.sh
source "$HERE/common.sh"

need oha "cargo install oha"
need python3 "apt-get install -y python3"
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$REPO" && cargo build --release -p sluice -p sluice-benches --bin sluice --bin bench-upstream)
    rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
    CARGO_TARGET_DIR=$TARGET_DIR/wasm-plugins cargo build --release --target wasm32-wasip2 \
        --manifest-path "$REPO/tests/plugins/Cargo.toml" -p looper -p panicker -p memory-hog
fi
[[ -x $SLUICE_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing: $SLUICE_BIN, $UPSTREAM_BIN"
for p in looper panicker memory_hog; do
    [[ -f $WASM_DIR/$p.wasm ]] || die "no $WASM_DIR/$p.wasm (run without SKIP_BUILD=1)"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_tmp hostile
UPSTREAM_PORT=$BASE_PORT
PORT=$((BASE_PORT + 1))
"$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream "$!"

mkdir -p "$TMP/plugins"
cp "$WASM_DIR/looper.wasm" "$TMP/plugins/looper.wasm"
cp "$WASM_DIR/panicker.wasm" "$TMP/plugins/panicker.wasm"
cp "$WASM_DIR/memory_hog.wasm" "$TMP/plugins/memory-hog.wasm"
cat >"$TMP/sluice.yaml" <<EOF
version: 1
server: { access_log: { enabled: false } }
listeners:
  - name: bench
    address: 127.0.0.1:$PORT
plugins:
  dir: $TMP/plugins
  cache_dir: $TMP/cache
upstreams:
  app:
    targets: [{ address: 127.0.0.1:$UPSTREAM_PORT }]
routes:
  - { name: plain, match: { path_prefix: /plain }, target: { upstream: app } }
  - name: loop
    match: { path_prefix: /loop }
    target: { upstream: app }
    plugins: [{ name: looper, limits: { deadline: $DEADLINE } }]
  - name: panic
    match: { path_prefix: /panic }
    target: { upstream: app }
    plugins: [{ name: panicker }]
  - name: hog
    match: { path_prefix: /hog }
    target: { upstream: app }
    plugins: [{ name: memory-hog, limits: { memory: 32MiB } }]
EOF
"$SLUICE_BIN" run --config "$TMP/sluice.yaml" --workers "$WORKERS" --no-watch >"$TMP/sluice.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_port "$PORT" sluice "$GW" 30
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/plain" || die "/plain does not answer"

# oha's JSON → "requests p50 p99 p99.9 errors statuses" (milliseconds).
read_oha() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p = d.get("latencyPercentiles", {})
ms = lambda k: "%.3f" % (p[k] * 1000) if p.get(k) is not None else "-"
codes = d.get("statusCodeDistribution", {})
errs = sum(d.get("errorDistribution", {}).values())
print("\t".join([str(sum(codes.values())), ms("p50"), ms("p99"), ms("p99.9"), str(errs),
                 ",".join(f"{k}:{v}" for k, v in sorted(codes.items()))]))
EOF
}

hammer() { # hammer PATH RATE OUT: a hostile client for DURATION seconds
    [[ $2 == 0 ]] && return 0
    oha -z "${DURATION}s" -c 4 -q "$2" --no-tui --output-format json \
        "http://127.0.0.1:$PORT$1" >"$3" 2>/dev/null &
    HAMMERS+=($!)
}

RSS_BASE=$(rss_kb "$GW")
printf '| round | load on hostile routes | /plain requests | p50 ms | p99 ms | p99.9 ms | errors | hostile statuses | RSS KiB |\n|---|---|---:|---:|---:|---:|---:|---|---:|\n'
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in alone hostile; do
        HAMMERS=()
        if [[ $mode == hostile ]]; then
            hammer /loop "$LOOP_RATE" "$TMP/loop.json"
            hammer /panic "$PANIC_RATE" "$TMP/panic.json"
            hammer /hog "$HOG_RATE" "$TMP/hog.json"
        fi
        oha -z "${DURATION}s" -w -c "$CONNS" -q "$RATE" --latency-correction --no-tui --output-format json \
            "http://127.0.0.1:$PORT/plain" >"$TMP/plain.json" 2>"$TMP/plain.err" ||
            die "oha failed: $(cat "$TMP/plain.err")"
        rss=$(rss_kb "$GW")
        for pid in "${HAMMERS[@]}"; do wait "$pid" || true; done
        IFS=$'\t' read -r n p50 p99 p999 errs codes <<<"$(read_oha "$TMP/plain.json")"
        hostile="-"
        if [[ $mode == hostile ]]; then
            hostile=""
            for h in loop panic hog; do
                [[ -s $TMP/$h.json ]] || continue
                IFS=$'\t' read -r _ _ _ _ herrs hcodes <<<"$(read_oha "$TMP/$h.json")"
                hostile+="/$h $hcodes (errors $herrs) "
            done
            load="loop $LOOP_RATE/s, panic $PANIC_RATE/s, hog $HOG_RATE/s"
        else
            load="none"
        fi
        printf '| %d | %s | %s (%s) | %s | %s | %s | %s | %s | %s |\n' \
            "$r" "$load" "$n" "$codes" "$p50" "$p99" "$p999" "$errs" "$hostile" "$rss"
    done
done
sleep 3
log "RSS: $RSS_BASE KiB at the start, $(rss_kb "$GW") KiB 3 s after the last run"
kill -0 "$GW" || die "the gateway exited; see $TMP/sluice.log"
