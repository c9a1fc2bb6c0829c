#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/tally.wasm:
# C bindings for wit/ -> clang (wasm32-wasi reactor) -> core module -> component.
set -euo pipefail
cd "$(dirname "$0")"

SLUICE="${SLUICE:-sluice}"
CC="${CC:-clang-19}"
OUT="${OUT:-build}"
mkdir -p "$OUT" gen

# The bindings are generated from wit/ on every build, never edited or committed.
"$SLUICE" plugin bindgen --lang c --out gen

# A reactor: no main(), the host calls the exported functions. The generated
# plugin_component_type.o carries the world's type for componentize.
"$CC" --target=wasm32-wasi -mexec-model=reactor -Os \
    -Wall -Wextra ${CFLAGS:-} -Igen \
    -Wl,--strip-debug \
    src/handlers.c gen/plugin.c gen/plugin_component_type.o \
    -o "$OUT/core.wasm"

"$SLUICE" plugin componentize "$OUT/core.wasm" -o "$OUT/tally.wasm"
rm "$OUT/core.wasm"
echo "built $OUT/tally.wasm"
