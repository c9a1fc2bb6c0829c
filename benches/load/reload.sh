#!/usr/bin/env bash
# benches/load/reload.sh — P5 of BENCHMARKS.md: hot reload every 0.5 s during a load run.
#
#   benches/load/reload.sh                          # from anywhere inside the repository
#   RATE=2000 DURATION=20 ROUNDS=2 benches/load/reload.sh
#
# What it does, all on 127.0.0.1 (the building blocks of run.sh, P1):
#   1. cargo build --release -p sluice -p sluice-benches, and the two test builds of one
#      plugin, tests/plugins/tagger-v1 and tagger-v2 (wasm32-wasip2)   (SKIP_BUILD=1 skips)
#   2. starts bench-upstream (1 thread) on core LOAD_CPU and `sluice run --workers 1`
#      (watching its config file, the default) on core PROXY_CPU; the config has one
#      upstream route and one static route `/p5-version`, both with the plugin `tagger`
#      (request, response and response-chunk phases: every response names the build
#      that served it in `x-tagger`)
#   3. alternates, ROUNDS times: a STEADY run — `oha -z DURATION -c CONNS -q RATE
#      --latency-correction` (open loop) with nothing changing — and a RELOAD run, the
#      same load while a reloader (python3, core LOAD_CPU) every PERIOD (0.5 s):
#        - rewrites the config (temp file + rename, like an editor): `/p5-version`
#          answers the tick number, and
#        - swaps the plugin: tagger-v1 ↔ tagger-v2 copied to plugins/.tagger.wasm.tmp
#          and renamed over plugins/tagger.wasm (like a deploy),
#      then polls `GET /p5-version` every 5 ms until it answers the new tick number
#      through the new build: that is "write → new version serving"
#   4. prints a markdown table (non-2xx, connection errors, p50/p99/p99.9, the p99 ratio
#      reload ÷ steady, write → serving, reloads and failed reloads from /-/status, RSS),
#      and keeps it with the raw outputs under OUT_DIR (default target/load-bench/p5-<ts>/)
#
# Goals (issue 4): zero non-2xx, zero connection errors, p99 during reloads ≤ 2× steady,
# write → new version serving ≤ 1 s.
#
# Needs: oha (cargo install oha), python3, curl, taskset (util-linux), a Rust toolchain
# with the wasm32-wasip2 target (rust-toolchain.toml lists it).
#
# Knobs (environment):
#   RATE=2000 CONNS=32 DURATION=20 ROUNDS=2 WARMUP=3 PERIOD=0.5
#   NICE=0  PROXY_CPU=0 LOAD_CPU=1  BASE_PORT=19180 (upstream, sluice +2, admin +3)
#   SLUICE_LOG=warn   OUT_DIR=…  SKIP_BUILD=1  KEEP_TMP=1  COMMIT=…
set -euo pipefail

RATE=${RATE:-2000}
CONNS=${CONNS:-32}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-3}
PERIOD=${PERIOD:-0.5}
NICE=${NICE:-0}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-19180}
SLUICE_LOG=${SLUICE_LOG:-warn}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

UPSTREAM_PORT=$BASE_PORT
SLUICE_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR=${OUT_DIR:-$TARGET_DIR/load-bench/p5-$STAMP}

log() { printf '[p5] %s\n' "$*" >&2; }
die() { printf '[p5] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=common.sh
source "$HERE/common.sh"

for n in RATE CONNS DURATION ROUNDS WARMUP BASE_PORT PROXY_CPU LOAD_CPU; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number (got '${!n}')"
done
[[ $PERIOD =~ ^[0-9]*\.?[0-9]+$ ]] || die "PERIOD must be a number of seconds (got '$PERIOD')"
[[ $NICE =~ ^-?[0-9]+$ ]] || die "NICE must be a whole number (got '$NICE')"
need cargo "https://rustup.rs"
need oha "cargo install oha"
need python3 "apt-get install -y python3"
need curl "apt-get install -y curl"
need taskset "apt-get install -y util-linux"
CPUS=$(nproc --all)
((PROXY_CPU < CPUS && LOAD_CPU < CPUS)) || die "PROXY_CPU/LOAD_CPU must be < $CPUS (cores here)"

for port in "$UPSTREAM_PORT" "$SLUICE_PORT" "$ADMIN_PORT"; do
    ! port_open "$port" || die "port $port is in use; pick other ports with BASE_PORT=…"
done

# ---------------------------------------------------------------------------- build
WASM_DIR=$TARGET_DIR/wasm-plugins/wasm32-wasip2/release
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release): sluice, bench-upstream, tagger-v1, tagger-v2"
    (cd "$REPO" && cargo build --release -p sluice -p sluice-benches) >&2
    (cd "$REPO/tests/plugins" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        CARGO_TARGET_DIR="$TARGET_DIR/wasm-plugins" \
        cargo build --release --target wasm32-wasip2 -p tagger-v1 -p tagger-v2) >&2
fi
SLUICE_BIN=$TARGET_DIR/release/sluice
UPSTREAM_BIN=$TARGET_DIR/release/bench-upstream
[[ -x $SLUICE_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing under $TARGET_DIR/release"
[[ -f $WASM_DIR/tagger_v1.wasm && -f $WASM_DIR/tagger_v2.wasm ]] || die "tagger components missing in $WASM_DIR"

# ---------------------------------------------------------------------- processes
start_tmp sluice-p5


mkdir -p "$TMP/plugins" "$TMP/cache" "$OUT_DIR/raw"
RAW=$OUT_DIR/raw
cp "$WASM_DIR/tagger_v1.wasm" "$TMP/v1.wasm"
cp "$WASM_DIR/tagger_v2.wasm" "$TMP/v2.wasm"
cp "$TMP/v1.wasm" "$TMP/plugins/tagger.wasm"

# The config of tick N (the reloader writes the same text with other N).
cat >"$TMP/config.py" <<PY
def config(n):
    return f"""version: 1
server:
  access_log: {{ enabled: false }}
admin:
  address: 127.0.0.1:$ADMIN_PORT
listeners:
  - name: bench
    address: 127.0.0.1:$SLUICE_PORT
    protocols: [http1]
plugins:
  dir: plugins
  cache_dir: cache
upstreams:
  bench:
    targets:
      - address: 127.0.0.1:$UPSTREAM_PORT
    pool:
      max_idle_per_target: 64
routes:
  - name: version
    match: {{ path_prefix: /p5-version }}
    target: {{ static: {{ body: "tick-{n}" }} }}
    plugins:
      - name: tagger
  - name: bench
    match: {{ path_prefix: / }}
    target: {{ upstream: bench }}
    plugins:
      - name: tagger
"""
PY
python3 -c "import sys; sys.path.insert(0, '$TMP'); from config import config; open('$TMP/sluice.yaml', 'w').write(config(0))"
cp "$TMP/sluice.yaml" "$OUT_DIR/sluice.yaml"

"${PRIO[@]}" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" --threads 1 \
    >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" upstream "$!"

"$SLUICE_BIN" check "$TMP/sluice.yaml" >&2 || die "sluice rejected $TMP/sluice.yaml"
env SLUICE_LOG="$SLUICE_LOG" "${PRIO[@]}" taskset -c "$PROXY_CPU" "$SLUICE_BIN" run \
    --config "$TMP/sluice.yaml" --workers 1 >"$TMP/sluice.log" 2>&1 &
SLUICE_PID=$!
PIDS+=("$SLUICE_PID")
wait_port "$SLUICE_PORT" sluice "$SLUICE_PID"
tag=$(curl -sS -o /dev/null -w '%header{x-tagger}' --max-time 5 "http://127.0.0.1:$SLUICE_PORT/bench") ||
    die "sluice does not answer; see $TMP/sluice.log"
[[ $tag == tagger-v1 ]] || die "sluice answered without the plugin's tag (x-tagger: '$tag')"

status_json() { curl -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/-/status"; }

oha_run() { # oha_run SECONDS OUT.json
    "${PRIO[@]}" taskset -c "$LOAD_CPU" oha -z "${1}s" -w -c "$CONNS" -q "$RATE" --latency-correction \
        --no-tui --output-format json --worker-threads 1 "http://127.0.0.1:$SLUICE_PORT/bench" \
        >"$2" 2>"$2.err" || die "oha failed: $(cat "$2.err")"
}

# The reloader: every PERIOD, a config edit and a plugin swap, then poll until served.
cat >"$TMP/reloader.py" <<'PY'
import json, os, re, shutil, sys, time, urllib.request
sys.path.insert(0, os.path.dirname(sys.argv[0]))
from config import config
tmp, port, period, seconds, first, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
plugin = os.path.join(tmp, "plugins", "tagger.wasm")
cfg = os.path.join(tmp, "sluice.yaml")
def serving():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/p5-version", timeout=2) as r:
            return r.headers.get("x-tagger"), r.read().decode()
    except Exception as e:
        return None, repr(e)
samples = []
start = time.monotonic()
n = first
while time.monotonic() - start < seconds:
    tick = start + (n - first) * period
    delay = tick - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    n += 1
    build = "tagger-v2" if n % 2 else "tagger-v1"
    # An editor's save and a deploy's copy, at the same moment.
    with open(cfg + ".tmp", "w") as f:
        f.write(config(n))
    shutil.copyfile(os.path.join(tmp, "v2.wasm" if n % 2 else "v1.wasm"), os.path.join(tmp, "plugins", ".tagger.wasm.tmp"))
    os.rename(cfg + ".tmp", cfg)
    os.rename(os.path.join(tmp, "plugins", ".tagger.wasm.tmp"), plugin)
    written = time.monotonic()
    want = f"<{build}:tick-{n}>"
    while True:
        tag, body = serving()
        if tag == build and body == want:
            samples.append(time.monotonic() - written)
            break
        if time.monotonic() - written > 10:
            samples.append(None)  # never served within 10 s
            break
        time.sleep(0.005)
json.dump({"last": n, "samples": samples}, open(out, "w"))
PY

summarize() { # summarize OHA.json -> requests p50 p99 p999 max non2xx connerrs
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution") or {}
non2xx = sum(v for k, v in codes.items() if not k.startswith("2"))
errs = sum((d.get("errorDistribution") or {}).values())
lp = d["latencyPercentiles"]
ms = lambda v: "%.3f" % ((v or 0) * 1000)
print("\t".join([str(sum(codes.values())), ms(lp.get("p50")), ms(lp.get("p99")), ms(lp.get("p99.9")),
                 ms(d["summary"].get("slowest")), str(non2xx), str(errs)]))
PY
}

# --------------------------------------------------------------------- measurement
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up ${WARMUP}s at $RATE req/s"
oha_run "$WARMUP" "$RAW/warmup.json"
RSS_START=$(rss_kb "$SLUICE_PID")
RUNS=$OUT_DIR/runs.tsv # kind round requests p50 p99 p999 max non2xx connerrs
: >"$RUNS"
TICK=0
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r: steady ${DURATION}s"
    oha_run "$DURATION" "$RAW/steady-$r.json"
    printf 'steady\t%d\t%s\n' "$r" "$(summarize "$RAW/steady-$r.json")" >>"$RUNS"

    log "round $r: reload every ${PERIOD}s for ${DURATION}s"
    gen0=$(status_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
    "${PRIO[@]}" taskset -c "$LOAD_CPU" python3 "$TMP/reloader.py" "$TMP" "$SLUICE_PORT" "$PERIOD" \
        "$DURATION" "$TICK" "$RAW/reloader-$r.json" &
    RELOADER=$!
    oha_run "$DURATION" "$RAW/reload-$r.json"
    wait "$RELOADER" || die "the reloader failed"
    TICK=$(python3 -c "import json; print(json.load(open('$RAW/reloader-$r.json'))['last'])")
    gen1=$(status_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
    printf 'reload\t%d\t%s\t%d\n' "$r" "$(summarize "$RAW/reload-$r.json")" $((gen1 - gen0)) >>"$RUNS"
    log "round $r: $(tail -1 "$RUNS")"
done
RSS_END=$(rss_kb "$SLUICE_PID")
status_json >"$RAW/status.json"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# -------------------------------------------------------------------------- report
COMMIT=${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ local changes)" || true)
python3 - "$RUNS" "$RAW" "$RAW/status.json" >"$OUT_DIR/results.md" <<PY
import glob, json, statistics, sys
runs = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
status = json.load(open(sys.argv[3]))
print("### P5 $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT$DIRTY")
print()
print("Machine: $CPUS cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), shared; load average"
      " before $LOAD_BEFORE, after $LOAD_AFTER. sluice --workers 1 on core $PROXY_CPU; bench-upstream"
      " (1 thread), oha and the reloader on core $LOAD_CPU; nice $NICE; sluice log filter $SLUICE_LOG."
      " Open loop: \`oha -z ${DURATION}s -c $CONNS -q $RATE --latency-correction\`, HTTP/1.1 keep-alive;"
      " route with the plugin tagger (request, response and response-chunk phases). Reload runs: every"
      " ${PERIOD}s a config rewrite (temp + rename) and a plugin swap (tagger-v1 <-> tagger-v2, temp + rename).")
print()
print("| run | round | requests | non-2xx | conn errors | p50 ms | p99 ms | p99.9 ms | max ms | reloads |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    kind, rnd, n, p50, p99, p999, mx, non2xx, errs = r[:9]
    reloads = r[9] if len(r) > 9 else "-"
    print(f"| {kind} | {rnd} | {n} | {non2xx} | {errs} | {p50} | {p99} | {p999} | {mx} | {reloads} |")
def med(kind, col):
    v = [float(r[col]) for r in runs if r[0] == kind]
    return statistics.median(v)
ratio = med("reload", 4) / med("steady", 4) if med("steady", 4) else float("nan")
print()
samples = []
for f in sorted(glob.glob(sys.argv[2] + "/reloader-*.json")):
    samples += json.load(open(f))["samples"]
ok = sorted(s for s in samples if s is not None)
never = sum(1 for s in samples if s is None)
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] * 1000 if ok else float("nan")
nonok = sum(int(r[7]) for r in runs)
conn = sum(int(r[8]) for r in runs)
print(f"- p99 during reloads / steady (medians of rounds): **{ratio:.2f}×** (goal ≤ 2×)")
print(f"- non-2xx: **{nonok}**, connection errors: **{conn}** over all runs (goal 0, 0)")
print(f"- file write → new version serving, {len(samples)} reloads: median **{q(0.5):.0f} ms**, p90 {q(0.9):.0f} ms,"
      f" max **{(ok[-1] * 1000 if ok else float('nan')):.0f} ms**; never served within 10 s: {never} (goal ≤ 1000 ms)")
rl = status["reload"]
print(f"- gateway: generation {status['generation']}, reloads_total {rl['reloads_total']},"
      f" failures_total {rl['failures_total']}, live snapshots at the end {status.get('live_snapshots')}")
print(f"- RSS after warm-up $RSS_START KiB, at the end $RSS_END KiB")
PY
cat "$OUT_DIR/results.md"
log "results and raw outputs: $OUT_DIR"
