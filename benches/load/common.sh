# benches/load/common.sh — the process plumbing run.sh and reload.sh share. Sourced
# after the caller defined log() and die() (with its own prefix) and NICE, KEEP_TMP.
#
#   need TOOL HOW-TO-INSTALL   die unless TOOL is on PATH
#   port_open PORT             true if something listens on 127.0.0.1:PORT
#   start_tmp PREFIX           TMP := a fresh temp folder; on exit every pid in PIDS is
#                              stopped (TERM, 5 s, then KILL) and TMP removed (unless
#                              KEEP_TMP=1)
#   wait_port PORT NAME PID [S] wait up to S seconds (default 10) for PID (NAME) to
#                              listen on PORT
#   rss_kb PID                 the resident memory of PID, in KiB
#   PRIO                       the `nice` prefix for bench processes (empty at NICE=0)

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; install it with: $2"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PIDS=()
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do # at most 5 s for a graceful exit
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ -n ${TMP:-} ]]; then
        if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
}

start_tmp() { # start_tmp PREFIX
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# A prefix, not a function, so that `$!` is the pid of the program itself.
PRIO=()
if [[ ${NICE:-0} != 0 ]]; then PRIO=(nice -n "$NICE"); fi

wait_port() { # wait_port PORT NAME PID [SECONDS]
    local i seconds=${4:-10}
    for ((i = 0; i < seconds * 10; i++)); do
        port_open "$1" && return 0
        kill -0 "$3" 2>/dev/null || die "$2 exited at start; see $TMP/$2.log"
        sleep 0.1
    done
    die "$2 did not listen on port $1 within $seconds s; see $TMP/$2.log"
}

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
