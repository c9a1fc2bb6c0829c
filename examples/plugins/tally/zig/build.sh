#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/tally.wasm:
# C bindings for wit/ -> zig (wasm32-wasi reactor) -> core module -> component.
set -euo pipefail
cd "$(dirname "$0")"

SLUICE="${SLUICE:-sluice}"
OUT="${OUT:-build}"
# Zig from PyPI (`pip install -r requirements.txt`); ZIG overrides, e.g. ZIG=zig.
read -r -a ZIG <<< "${ZIG:-python3 -m ziglang}"
want="$(sed -n 's/^ziglang==//p' requirements.txt)"
have="$("${ZIG[@]}" version)"
if [ "$have" != "$want" ]; then
    echo "warning: this plugin is tested with Zig $want, found $have (pip install -r requirements.txt)" >&2
fi
mkdir -p "$OUT" gen

# The bindings are generated from wit/ on every build, never edited or committed.
"$SLUICE" plugin bindgen --lang c --out gen

# plugin.h as the Zig module `plugin` that src/main.zig imports.
"${ZIG[@]}" translate-c -target wasm32-wasi -lc -Igen gen/plugin.h > gen/plugin.zig

# A reactor without an entry point: the host calls the exported functions. The
# generated plugin_component_type.o carries the world's type for componentize.
# (Options before an -M flag belong to that module: the C files to the root.)
"${ZIG[@]}" build-exe -target wasm32-wasi -mexec-model=reactor -fno-entry -lc \
    -O ReleaseSmall -femit-bin="$OUT/core.wasm" \
    -Igen gen/plugin.c gen/plugin_component_type.o --dep plugin -Mroot=src/main.zig \
    -Mplugin=gen/plugin.zig

"$SLUICE" plugin componentize "$OUT/core.wasm" -o "$OUT/tally.wasm"
rm -f "$OUT/core.wasm" "$OUT/core.wasm.o"
echo "built $OUT/tally.wasm"
