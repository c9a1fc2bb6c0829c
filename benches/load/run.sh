#!/usr/bin/env bash
# benches/load/run.sh — the load bench (P1 of BENCHMARKS.md): Sluice with one route and
# an empty plugin chain vs nginx `proxy_pass` (and HAProxy, when installed), side by
# side in one run, on the same upstream (bench-upstream) with the same load generator.
# P2 and P3 use two more peers that apply the same three policies — a JWT (HS256), a
# rate limit per consumer and a header transform:
#   sluice-chain  Sluice with the built-in auth + rate-limit + transform plugins
#   nginx-lua     nginx with the Lua module doing the same (nginx-lua.conf.in)
#   sluice-floor  Sluice with three built-in plugins that each set one fixed request
#                 header: the least any three-plugin chain costs (sluice-floor.yaml.in)
#   sluice-split  Sluice whose route is a 90/10 `split` between two pools of the same
#                 upstream: what a canary split costs over `sluice` (sluice-split.yaml.in)
#   nginx-cache   nginx with `proxy_cache` (nginx-cache.conf.in) and
#   sluice-cache  Sluice with a route `cache` (sluice-cache.yaml.in): after the first
#                 request every request is a cache hit; the upstream is not asked
#   PEERS="nginx-cache sluice-cache" benches/load/run.sh   # a cache hit vs nginx's
#   sluice-function  Sluice whose route's target is a wasi:http function (the test
#                 component tests/plugins/http-hello, a fresh instance per request)
#                 instead of the upstream: what answering from a function costs
#                 (sluice-function.yaml.in); it answers its own 21-byte body
#   PEERS="sluice sluice-chain" benches/load/run.sh      # P2: the chain vs an empty chain
#   PEERS="nginx-lua sluice-chain" benches/load/run.sh   # P3: vs nginx + Lua
# With either of them, every peer's requests carry the same `Authorization: Bearer`
# token (a far-future HS256 JWT made here with python3).
#
#   benches/load/run.sh                      # from anywhere inside the repository
#   ROUNDS=3 DURATION=10 benches/load/run.sh # knobs are environment variables
#
# What it does, all on 127.0.0.1:
#   1. cargo build --release -p sluice -p sluice-benches   (SKIP_BUILD=1 skips it)
#   2. starts bench-upstream (1 thread) on core 1, and every peer on core 0 (taskset):
#      nginx (1 worker, upstream keepalive 64), sluice (--workers 1), haproxy (nbthread 1)
#   3. warms each peer up, then alternates peers A B A B … for ROUNDS rounds of
#      `wrk -t1 -cCONNS -dDURATION` (wrk on core 1): saturation req/s, and CPU-µs per
#      request of the proxy process (utime+stime from /proc/PID/stat ÷ requests)
#   4. latency at a fixed open-loop rate = RATE_FRACTION (50%) of the slowest peer's
#      saturation, with `oha -q RATE --latency-correction` (no coordinated omission),
#      again alternating peers for ROUNDS rounds; without oha it falls back to wrk's
#      closed-loop latency at -c CONNS, labelled as such
#   5. prints a markdown table with ratios vs nginx, and saves it with the raw outputs
#      under OUT_DIR (default target/load-bench/<timestamp>/)
#
# Needs: nginx, wrk, taskset (util-linux), curl; oha and python3 for open-loop latency.
#   apt-get install -y nginx wrk curl python3 haproxy   (haproxy is optional)
#   apt-get install -y libnginx-mod-http-lua lua-cjson   (the nginx-lua peer only)
#   cargo install oha
#
# Knobs (environment):
#   PEERS="nginx sluice haproxy"  peers to run, the first is the baseline of the ratios
#                                 (default: nginx sluice, plus haproxy when installed)
#   ROUNDS=2 DURATION=8 WARMUP=3  rounds per peer, seconds per wrk run, warm-up seconds
#   CONNS=32                      connections (wrk -t1 -cCONNS, oha -cCONNS)
#   LAT_DURATION=10 RATE_FRACTION=0.5 RATE=   open-loop run length, rate (RATE wins)
#   SLUICE_LOG=                   sluice's log filter (default: unset = the binary's default,
#                                 `info`, which creates a tracing span per request)
#   ACCESS_LOG=off                on: nginx and sluice both write an access log (to a file /
#                                 stderr redirected to a file); off: neither does
#   CALL_LOG=off                  on: the sluice peer records every call in its SQLite call log
#   NICE=0                        e.g. -10 (root) gives the bench processes priority over
#                                 other work on a shared machine; used for every peer alike
#   PROXY_CPU=0 LOAD_CPU=1        cores for the proxy under test and for upstream + load
#                                 (a list such as 0,1 for several; the core figures then
#                                 sum over the list)
#   WORKERS=1                     worker processes/threads of every peer: nginx
#                                 worker_processes, sluice --workers, haproxy nbthread;
#                                 wrk and oha run that many threads too. On a 2-core
#                                 machine WORKERS=2 needs PROXY_CPU=0,1 LOAD_CPU=0,1:
#                                 proxy and load share the cores, so read CPU-µs per
#                                 request, not req/s
#   BASE_PORT=19080               upstream BASE_PORT, nginx +1, sluice +2, haproxy +3,
#                                 sluice-chain +4, nginx-lua +5, sluice-floor +6,
#                                 sluice-split +7, nginx-cache +8, sluice-cache +9,
#                                 sluice-function +10
#   RL_RATE=1000000               the rate limit of the policy peers (per second, burst
#                                 the same): high, so every request is checked and passes
#   JWT_CACHE=0                   sluice-chain's auth `jwt.cache_entries`: 0 verifies every
#                                 token like nginx-lua; 1024 is the plugin's default
#   OUT_DIR=…  SKIP_BUILD=1  KEEP_TMP=1  COMMIT=… (names the build when run outside git)
#   SLUICE_BIN=…                  the sluice binary to run (default target/release/sluice),
#                                 for A/B runs of two builds
set -euo pipefail

# ---------------------------------------------------------------------------- settings
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
LAT_DURATION=${LAT_DURATION:-10}
RATE_FRACTION=${RATE_FRACTION:-0.5}
RATE=${RATE:-}
ACCESS_LOG=${ACCESS_LOG:-off}
SLUICE_LOG=${SLUICE_LOG:-}
NICE=${NICE:-0}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WORKERS=${WORKERS:-1}
BASE_PORT=${BASE_PORT:-19080}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

UPSTREAM_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
SLUICE_PORT=$((BASE_PORT + 2))
HAPROXY_PORT=$((BASE_PORT + 3))
SLUICE_CHAIN_PORT=$((BASE_PORT + 4))
NGINX_LUA_PORT=$((BASE_PORT + 5))
SLUICE_FLOOR_PORT=$((BASE_PORT + 6))
SLUICE_SPLIT_PORT=$((BASE_PORT + 7))
NGINX_CACHE_PORT=$((BASE_PORT + 8))
SLUICE_CACHE_PORT=$((BASE_PORT + 9))
SLUICE_FUNCTION_PORT=$((BASE_PORT + 10))
RL_RATE=${RL_RATE:-1000000}
JWT_CACHE=${JWT_CACHE:-0}
JWT_SECRET=bench-secret-0123456789abcdef0123

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR=${OUT_DIR:-$TARGET_DIR/load-bench/$STAMP}

log() { printf '[load-bench] %s\n' "$*" >&2; }
die() { printf '[load-bench] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=common.sh
source "$HERE/common.sh"

# ------------------------------------------------------------------------------ checks
for n in ROUNDS DURATION WARMUP CONNS LAT_DURATION BASE_PORT WORKERS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number (got '${!n}')"
done
for n in PROXY_CPU LOAD_CPU; do
    [[ ${!n} =~ ^[0-9]+(,[0-9]+)*$ ]] || die "$n must be a core or a list of cores like 0,1 (got '${!n}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 1 && DURATION <= 120 && LAT_DURATION >= 1 && LAT_DURATION <= 120)) ||
    die "DURATION and LAT_DURATION must be 1..120 seconds"
[[ $ACCESS_LOG == on || $ACCESS_LOG == off ]] || die "ACCESS_LOG must be on or off"
[[ $NICE =~ ^-?[0-9]+$ ]] || die "NICE must be a whole number (got '$NICE')"

need cargo "https://rustup.rs (the repository's rust-toolchain.toml picks the version)"
need nginx "apt-get install -y nginx"
need wrk "apt-get install -y wrk"
need taskset "apt-get install -y util-linux"
need curl "apt-get install -y curl"
CPUS=$(nproc --all)
for c in ${PROXY_CPU//,/ } ${LOAD_CPU//,/ }; do
    ((c < CPUS)) || die "PROXY_CPU/LOAD_CPU must be < $CPUS (cores here)"
done
[[ $PROXY_CPU != "$LOAD_CPU" ]] || log "warning: proxy and load share cores $PROXY_CPU"

if [[ -z ${PEERS:-} ]]; then
    PEERS="nginx sluice"
    if command -v haproxy >/dev/null 2>&1; then
        PEERS="$PEERS haproxy"
    else
        log "haproxy not installed (apt-get install -y haproxy): running without it"
    fi
fi
read -r -a PEER_LIST <<<"$PEERS"
for p in "${PEER_LIST[@]}"; do
    case $p in
        nginx | sluice | sluice-chain | sluice-floor | sluice-split | nginx-cache | sluice-cache | sluice-function) ;;
        haproxy) need haproxy "apt-get install -y haproxy" ;;
        nginx-lua)
            [[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]] ||
                die "nginx-lua needs the Lua module: apt-get install -y libnginx-mod-http-lua lua-cjson"
            ;;
        *) die "unknown peer '$p' (nginx, sluice, haproxy, sluice-chain, nginx-lua, sluice-floor, sluice-split, nginx-cache, sluice-cache, sluice-function)" ;;
    esac
done
# The policy peers need a token; every peer gets the same request.
AUTH=()
if [[ " ${PEER_LIST[*]} " == *" sluice-chain "* || " ${PEER_LIST[*]} " == *" nginx-lua "* ]]; then
    need python3 "apt-get install -y python3"
    TOKEN=$(python3 - "$JWT_SECRET" <<'PY'
import base64, hashlib, hmac, json, sys
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
signing = b({"alg": "HS256", "typ": "JWT"}) + b"." + b({"sub": "bench-client", "exp": 4102444800})
sig = base64.urlsafe_b64encode(hmac.new(sys.argv[1].encode(), signing, hashlib.sha256).digest()).rstrip(b"=")
print((signing + b"." + sig).decode())
PY
    )
    AUTH=(-H "Authorization: Bearer $TOKEN")
fi
BASELINE=${PEER_LIST[0]}

OPEN_LOOP=1
if ! command -v oha >/dev/null 2>&1; then
    OPEN_LOOP=0
    log "oha not found (cargo install oha): latency will be CLOSED-LOOP wrk figures"
elif ! command -v python3 >/dev/null 2>&1; then
    OPEN_LOOP=0
    log "python3 not found (apt-get install -y python3), needed to read oha's JSON:"
    log "latency will be CLOSED-LOOP wrk figures"
fi

for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$SLUICE_PORT" "$HAPROXY_PORT" "$SLUICE_CHAIN_PORT" "$NGINX_LUA_PORT" \
    "$SLUICE_FLOOR_PORT" "$SLUICE_SPLIT_PORT" "$SLUICE_FUNCTION_PORT"; do
    ! port_open "$port" || die "port $port is in use; pick other ports with BASE_PORT=…"
done

# ---------------------------------------------------------------------------- build
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release): sluice, bench-upstream"
    (cd "$REPO" && cargo build --release -p sluice -p sluice-benches) >&2
    if [[ " ${PEER_LIST[*]} " == *" sluice-function "* ]]; then
        log "building (wasm32-wasip2): the http-hello function"
        (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR/wasm-plugins cargo build --release \
            --target wasm32-wasip2 --manifest-path tests/plugins/Cargo.toml -p http-hello) >&2
    fi
fi
FUNCTION_WASM=$TARGET_DIR/wasm-plugins/wasm32-wasip2/release/http_hello.wasm
if [[ " ${PEER_LIST[*]} " == *" sluice-function "* ]]; then
    [[ -f $FUNCTION_WASM ]] || die "$FUNCTION_WASM missing (run without SKIP_BUILD=1 once)"
fi
SLUICE_BIN=${SLUICE_BIN:-$TARGET_DIR/release/sluice}
UPSTREAM_BIN=$TARGET_DIR/release/bench-upstream
[[ -x $SLUICE_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing under $TARGET_DIR/release"

# ---------------------------------------------------------------------- processes
start_tmp sluice-load



render() { # render TEMPLATE OUT
    sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@SLUICE_PORT@|$SLUICE_PORT|g" \
        -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" \
        -e "s|@SLUICE_CHAIN_PORT@|$SLUICE_CHAIN_PORT|g" -e "s|@NGINX_LUA_PORT@|$NGINX_LUA_PORT|g" \
        -e "s|@SLUICE_FLOOR_PORT@|$SLUICE_FLOOR_PORT|g" -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@SLUICE_SPLIT_PORT@|$SLUICE_SPLIT_PORT|g" \
        -e "s|@NGINX_CACHE_PORT@|$NGINX_CACHE_PORT|g" -e "s|@SLUICE_CACHE_PORT@|$SLUICE_CACHE_PORT|g" \
        -e "s|@SLUICE_FUNCTION_PORT@|$SLUICE_FUNCTION_PORT|g" \
        -e "s|@JWT_SECRET@|$JWT_SECRET|g" -e "s|@RL_RATE@|$RL_RATE|g" -e "s|@JWT_CACHE@|$JWT_CACHE|g" \
        -e "s|@NGINX_ACCESS_LOG@|$NGINX_ACCESS_LOG|g" \
        -e "s|@SLUICE_ACCESS_LOG@|$SLUICE_ACCESS_LOG|g" -e "s|@SLUICE_CALL_LOG@|$SLUICE_CALL_LOG|g" "$1" >"$2"
}
if [[ ${CALL_LOG:-off} == on ]]; then
    SLUICE_CALL_LOG="call_log: { path: $TMP/sluice-calls.db }"
else
    SLUICE_CALL_LOG="# call log off (CALL_LOG=on turns it on)"
fi
if [[ $ACCESS_LOG == on ]]; then
    NGINX_ACCESS_LOG="$TMP/nginx-access.log"
    SLUICE_ACCESS_LOG=true
else
    NGINX_ACCESS_LOG=off
    SLUICE_ACCESS_LOG=false
fi
chmod 755 "$TMP" # nginx's worker drops to an unprivileged user when started as root
mkdir -p "$TMP"/nginx-{client-body,proxy,fastcgi,uwsgi,scgi,cache}
render "$HERE/nginx.conf.in" "$TMP/nginx.conf"
render "$HERE/sluice.yaml.in" "$TMP/sluice.yaml"
render "$HERE/haproxy.cfg.in" "$TMP/haproxy.cfg"
render "$HERE/sluice-chain.yaml.in" "$TMP/sluice-chain.yaml"
render "$HERE/nginx-lua.conf.in" "$TMP/nginx-lua.conf"
render "$HERE/sluice-floor.yaml.in" "$TMP/sluice-floor.yaml"
render "$HERE/sluice-split.yaml.in" "$TMP/sluice-split.yaml"
render "$HERE/nginx-cache.conf.in" "$TMP/nginx-cache.conf"
render "$HERE/sluice-cache.yaml.in" "$TMP/sluice-cache.yaml"
render "$HERE/sluice-function.yaml.in" "$TMP/sluice-function.yaml"
mkdir -p "$TMP/functions"
[[ ! -f $FUNCTION_WASM ]] || cp "$FUNCTION_WASM" "$TMP/functions/hello.wasm"

declare -A PORT=([nginx]=$NGINX_PORT [sluice]=$SLUICE_PORT [haproxy]=$HAPROXY_PORT
    [sluice-chain]=$SLUICE_CHAIN_PORT [nginx-lua]=$NGINX_LUA_PORT [sluice-floor]=$SLUICE_FLOOR_PORT
    [sluice-split]=$SLUICE_SPLIT_PORT [nginx-cache]=$NGINX_CACHE_PORT [sluice-cache]=$SLUICE_CACHE_PORT
    [sluice-function]=$SLUICE_FUNCTION_PORT)
declare -A MAIN_PID=()

"${PRIO[@]}" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" --threads 1 \
    >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream "$!"
EXPECTED=$(curl -sS --max-time 5 "http://127.0.0.1:$UPSTREAM_PORT/")

start_peer() {
    local p=$1 pid
    case $p in
        nginx)
            nginx -t -q -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" ||
                die "nginx rejected $TMP/nginx.conf"
            "${PRIO[@]}" taskset -c "$PROXY_CPU" nginx -p "$TMP" -c "$TMP/nginx.conf" \
                -e "$TMP/nginx-error.log" >"$TMP/nginx.log" 2>&1 &
            ;;
        nginx-lua | nginx-cache)
            nginx -t -q -p "$TMP" -c "$TMP/$p.conf" -e "$TMP/$p-error.log" ||
                die "nginx rejected $TMP/$p.conf"
            "${PRIO[@]}" taskset -c "$PROXY_CPU" nginx -p "$TMP" -c "$TMP/$p.conf" \
                -e "$TMP/$p-error.log" >"$TMP/$p.log" 2>&1 &
            ;;
        sluice | sluice-chain | sluice-floor | sluice-split | sluice-cache | sluice-function)
            local conf=$TMP/$p.yaml
            "$SLUICE_BIN" check "$conf" >&2 || die "sluice rejected $conf"
            local env=()
            if [[ -n $SLUICE_LOG ]]; then env=(env "SLUICE_LOG=$SLUICE_LOG"); else env=(env -u SLUICE_LOG); fi
            "${env[@]}" "${PRIO[@]}" taskset -c "$PROXY_CPU" "$SLUICE_BIN" run \
                --config "$conf" --workers "$WORKERS" --no-watch >"$TMP/$p.log" 2>&1 &
            ;;
        haproxy)
            haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
            "${PRIO[@]}" taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" \
                >"$TMP/haproxy.log" 2>&1 &
            ;;
    esac
    pid=$!
    PIDS+=("$pid")
    MAIN_PID[$p]=$pid
    wait_port "${PORT[$p]}" "$p" "$pid"
    local got
    got=$(curl -sS --max-time 5 "${AUTH[@]}" "http://127.0.0.1:${PORT[$p]}/bench") ||
        die "$p does not answer; see $TMP/$p.log"
    local want=$EXPECTED
    [[ $p != sluice-function ]] || want="hello from a function"
    [[ $got == "$want" ]] || die "$p answered '$got', not the expected body"
}
for p in "${PEER_LIST[@]}"; do start_peer "$p"; done
ACCESS_LOG_SLUICE=$ACCESS_LOG
[[ $ACCESS_LOG == on ]] && ACCESS_LOG_SLUICE="on (stderr → file)"

# All CPU time of a peer: the process and, for nginx, its worker(s).
cpu_ticks() {
    local p=$1 main=${MAIN_PID[$1]} pids total=0 pid t
    pids=$main
    if [[ $p == nginx* ]]; then pids="$main $(pgrep -P "$main" | tr '\n' ' ')"; fi
    for pid in $pids; do
        # Fields after "(comm) ": state is $1, utime $12, stime $13 (clock ticks).
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)
# "busy total" clock ticks of one core so far, from /proc/stat (busy: not idle/iowait).
core_ticks() { # core_ticks CORES (one core, or a list such as 0,1: summed)
    awk -v cs="$1" 'BEGIN {n = split(cs, l, ","); for (i = 1; i <= n; i++) want["cpu" l[i]] = 1}
        $1 in want {t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; all += t}
        END {print busy, all}' /proc/stat
}
# busy share of a core between two core_ticks snapshots, and the part of it not
# spent by the proxy (other processes, interrupts): "BUSY% OTHER%"
core_busy() { # core_busy "B0 T0" "B1 T1" PROXY_TICKS
    awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN {split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; if (t <= 0) {print "-\t-"; exit}
        printf "%.0f\t%.0f\n", (y[1] - x[1]) / t * 100, (y[1] - x[1] - p) / t * 100}'
}
now() { date +%s.%N; }

# --------------------------------------------------------------------- measurement
mkdir -p "$OUT_DIR"
RAW=$OUT_DIR/raw
mkdir -p "$RAW"
cp "$TMP/nginx.conf" "$TMP/sluice.yaml" "$TMP/haproxy.cfg" "$TMP/sluice-chain.yaml" "$TMP/nginx-lua.conf" \
    "$TMP/sluice-floor.yaml" "$TMP/sluice-split.yaml" "$TMP/nginx-cache.conf" "$TMP/sluice-cache.yaml" \
    "$TMP/sluice-function.yaml" "$OUT_DIR/"
# peer round requests seconds ticks errors proxy-core-busy% other-on-proxy-core% load-core-busy%
THRU=$OUT_DIR/throughput.tsv
# peer round requests ticks p50 p90 p99 p999(ms) errors proxy-core-busy% other% load-core-busy%
LAT=$OUT_DIR/latency.tsv
: >"$THRU"
: >"$LAT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

wrk_run() { # wrk_run PEER SECONDS OUTFILE [extra wrk args]
    local p=$1 secs=$2 out=$3
    shift 3
    "${PRIO[@]}" taskset -c "$LOAD_CPU" wrk -t"$WORKERS" -c"$CONNS" -d"${secs}s" "${AUTH[@]}" "$@" \
        "http://127.0.0.1:${PORT[$p]}/bench" >"$out" 2>&1 || die "wrk failed against $p: $(cat "$out")"
}
wrk_errors() { # non-2xx + socket errors
    awk '/Non-2xx/ {e += $NF} /Socket errors/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10} END {print e + 0}' "$1"
}

log "peers: ${PEER_LIST[*]} (baseline $BASELINE); warm-up ${WARMUP}s each"
for p in "${PEER_LIST[@]}"; do wrk_run "$p" "$WARMUP" "$RAW/warmup-$p.txt"; done

for ((r = 1; r <= ROUNDS; r++)); do
    for p in "${PEER_LIST[@]}"; do
        out=$RAW/wrk-$p-$r.txt
        t0=$(cpu_ticks "$p")
        c0=$(core_ticks "$PROXY_CPU")
        l0=$(core_ticks "$LOAD_CPU")
        s0=$(now)
        wrk_run "$p" "$DURATION" "$out"
        s1=$(now)
        t1=$(cpu_ticks "$p")
        c1=$(core_ticks "$PROXY_CPU")
        l1=$(core_ticks "$LOAD_CPU")
        cores="$(core_busy "$c0" "$c1" $((t1 - t0)))	$(core_busy "$l0" "$l1" 0 | cut -f1)"
        reqs=$(awk '/requests in/ {print $1}' "$out")
        [[ $reqs =~ ^[0-9]+$ ]] || die "cannot read wrk's output: $out"
        secs=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.3f", b - a}')
        errs=$(wrk_errors "$out")
        printf '%s\t%d\t%d\t%s\t%d\t%d\t%b\n' "$p" "$r" "$reqs" "$secs" $((t1 - t0)) "$errs" "$cores" >>"$THRU"
        log "round $r $p: $(awk '/Requests\/sec/ {print $2}' "$out") req/s, errors $errs"
    done
done

# mean req/s per peer (requests / seconds, summed over rounds)
rps_of() { awk -F'\t' -v p="$1" '$1 == p {n += $3; s += $4} END {printf "%.0f", n / s}' "$THRU"; }
SLOWEST=
for p in "${PEER_LIST[@]}"; do
    v=$(rps_of "$p")
    if [[ -z $SLOWEST ]] || ((v < SLOWEST)); then SLOWEST=$v; fi
done
if [[ -z $RATE ]]; then RATE=$(awk -v s="$SLOWEST" -v f="$RATE_FRACTION" 'BEGIN {printf "%d", s * f}'); fi
((RATE >= 1)) || die "the rate for the latency runs came out as $RATE"

if ((OPEN_LOOP)); then
    log "latency: open loop at $RATE req/s (oha --latency-correction), ${LAT_DURATION}s per run"
else
    log "latency: CLOSED LOOP (wrk --latency -c$CONNS at saturation), ${LAT_DURATION}s per run"
fi
for ((r = 1; r <= ROUNDS; r++)); do
    for p in "${PEER_LIST[@]}"; do
        t0=$(cpu_ticks "$p")
        c0=$(core_ticks "$PROXY_CPU")
        l0=$(core_ticks "$LOAD_CPU")
        if ((OPEN_LOOP)); then
            out=$RAW/oha-$p-$r.json
            "${PRIO[@]}" taskset -c "$LOAD_CPU" oha -z "${LAT_DURATION}s" -w -c "$CONNS" -q "$RATE" \
                --latency-correction --no-tui --output-format json --worker-threads "$WORKERS" "${AUTH[@]}" \
                "http://127.0.0.1:${PORT[$p]}/bench" >"$out" 2>"$RAW/oha-$p-$r.err" ||
                die "oha failed against $p: $(cat "$RAW/oha-$p-$r.err")"
            t1=$(cpu_ticks "$p")
            line=$(python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution") or {}
ok = sum(v for k, v in codes.items() if k.startswith("2"))
errs = sum(codes.values()) - ok + sum((d.get("errorDistribution") or {}).values())
lp = d["latencyPercentiles"]
ms = lambda k: "%.3f" % ((lp.get(k) or 0) * 1000)
print("\t".join([str(sum(codes.values())), ms("p50"), ms("p90"), ms("p99"), ms("p99.9"), str(errs)]))
PY
            ) || die "cannot read oha's output: $out"
        else
            out=$RAW/wrk-latency-$p-$r.txt
            wrk_run "$p" "$LAT_DURATION" "$out" --latency
            t1=$(cpu_ticks "$p")
            line=$(awk -v e="$(wrk_errors "$out")" '
                function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
                /requests in/ {n = $1}
                /^ +50%/ {p50 = ms($2)} /^ +90%/ {p90 = ms($2)} /^ +99%/ {p99 = ms($2)}
                END {printf "%d\t%.3f\t%.3f\t%.3f\t-\t%d\n", n, p50, p90, p99, e}' "$out")
        fi
        c1=$(core_ticks "$PROXY_CPU")
        l1=$(core_ticks "$LOAD_CPU")
        cores="$(core_busy "$c0" "$c1" $((t1 - t0)))\t$(core_busy "$l0" "$l1" 0 | cut -f1)"
        IFS=$'\t' read -r n p50 p90 p99 p999 errs <<<"$line"
        printf '%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%b\n' "$p" "$r" "$n" $((t1 - t0)) \
            "$p50" "$p90" "$p99" "$p999" "$errs" "$cores" >>"$LAT"
        log "round $r $p: p50 ${p50} ms, p99 ${p99} ms, errors $errs"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# -------------------------------------------------------------------------- report
cpu_us_of() { # CPU-µs per request over all rounds of FILE, column of requests, of ticks
    awk -F'\t' -v p="$1" -v hz="$HZ" -v rc="$3" -v tc="$4" \
        '$1 == p {n += $rc; t += $tc} END {if (n) printf "%.1f", t / hz * 1e6 / n; else print "-"}' "$2"
}
busy_of() {
    awk -F'\t' -v p="$1" -v hz="$HZ" '$1 == p {t += $5; s += $4} END {printf "%.0f%%", t / hz / s * 100}' "$THRU"
}
rounds_of() { awk -F'\t' -v p="$1" '$1 == p {printf "%s%.0f", sep, $3 / $4; sep = " / "}' "$THRU"; }
# mean of a percentage column over rounds
pct_of() { awk -F'\t' -v p="$1" -v c="$3" '$1 == p && $c != "-" {s += $c; n++} END {if (n) printf "%.0f%%", s / n; else print "-"}' "$2"; }
errs_of() { awk -F'\t' -v p="$1" -v c="$3" '$1 == p {e += $c} END {print e + 0}' "$2"; }
# median of a latency column over rounds (the mean of the two middle ones when even)
lat_of() {
    awk -F'\t' -v p="$1" -v c="$2" '$1 == p && $c != "-" {v[++n] = $c}
        END {if (!n) {print "-"; exit}
             for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) {t = v[i]; v[i] = v[j]; v[j] = t}
             if (n % 2) printf "%.3f", v[(n + 1) / 2]; else printf "%.3f", (v[n / 2] + v[n / 2 + 1]) / 2}' "$LAT"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b}'; }

COMMIT=${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ local changes)" || true)
if ((OPEN_LOOP)); then
    LAT_TITLE="open loop at $RATE req/s ($RATE_FRACTION × slowest saturation), \`oha -c$CONNS -q $RATE --latency-correction\`, ${LAT_DURATION}s × $ROUNDS rounds, median of rounds"
else
    LAT_TITLE="**CLOSED LOOP** (\`wrk -t$WORKERS -c$CONNS --latency\` at saturation: oha not installed; these are not open-loop figures), ${LAT_DURATION}s × $ROUNDS rounds, median of rounds"
fi

{
    echo "### Load bench $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT$DIRTY"
    echo
    echo "Machine: $CPUS cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), shared;" \
        "load average before $LOAD_BEFORE, after $LOAD_AFTER. Proxy on core(s) $PROXY_CPU, $WORKERS worker(s);" \
        "bench-upstream (1 thread) and the load generator on core(s) $LOAD_CPU; nice $NICE." \
        "Access logs: $ACCESS_LOG_SLUICE; sluice log filter: ${SLUICE_LOG:-default (info)}. HTTP/1.1 keep-alive, ${#EXPECTED}-byte body."
    echo
    echo "Throughput: \`wrk -t$WORKERS -c$CONNS\`, ${DURATION}s × $ROUNDS rounds, peers alternated" \
        "(${PEER_LIST[*]}), after a ${WARMUP}s warm-up each."
    echo
    echo "| peer | req/s (mean) | req/s per round | CPU-µs/req | proxy CPU busy | other work on proxy core | load core busy | errors |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|"
    for p in "${PEER_LIST[@]}"; do
        echo "| $p | $(rps_of "$p") | $(rounds_of "$p") | $(cpu_us_of "$p" "$THRU" 3 5) | $(busy_of "$p") | $(pct_of "$p" "$THRU" 8) | $(pct_of "$p" "$THRU" 9) | $(errs_of "$p" "$THRU" 6) |"
    done
    echo
    echo "Latency: $LAT_TITLE."
    echo
    echo "| peer | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU-µs/req at this rate | other work on proxy core | load core busy | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${PEER_LIST[@]}"; do
        echo "| $p | $(lat_of "$p" 5) | $(lat_of "$p" 6) | $(lat_of "$p" 7) | $(lat_of "$p" 8) | $(cpu_us_of "$p" "$LAT" 3 4) | $(pct_of "$p" "$LAT" 11) | $(pct_of "$p" "$LAT" 12) | $(errs_of "$p" "$LAT" 9) |"
    done
    echo
    others=()
    for p in "${PEER_LIST[@]:1}"; do others+=("$p"); done
    if ((${#others[@]})); then
        printf '| ratio vs %s |' "$BASELINE"
        for p in "${others[@]}"; do printf ' %s / %s |' "$p" "$BASELINE"; done
        echo
        printf '|---|'
        for _ in "${others[@]}"; do printf -- '---:|'; done
        echo
        row() { # row LABEL FUNCTION ARGS… (the peer is inserted first)
            local label=$1 fn=$2 q
            shift 2
            printf '| %s |' "$label"
            for q in "${others[@]}"; do
                printf ' %s |' "$(ratio "$("$fn" "$q" "$@")" "$("$fn" "$BASELINE" "$@")")"
            done
            echo
        }
        row "throughput (higher is better)" rps_of
        row "CPU-µs per request, saturated (lower is better)" cpu_us_of "$THRU" 3 5
        row "CPU-µs per request at $RATE req/s" cpu_us_of "$LAT" 3 4
        row "p50 latency" lat_of 5
        row "p99 latency" lat_of 7
        if ((OPEN_LOOP)); then row "p99.9 latency" lat_of 8; fi
    fi
} >"$OUT_DIR/results.md"

cat "$OUT_DIR/results.md"
log "results and raw outputs: $OUT_DIR"
