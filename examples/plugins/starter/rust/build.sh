#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/starter.wasm.
set -euo pipefail
cd "$(dirname "$0")"

name=starter
target_dir="${CARGO_TARGET_DIR:-target}"
out="${OUT:-build}"
cargo build --release --target wasm32-wasip2 --target-dir "$target_dir"
mkdir -p "$out"
# Cargo names the library file after the crate, with `-` turned into `_`.
cp "$target_dir/wasm32-wasip2/release/${name//-/_}.wasm" "$out/$name.wasm"
echo "built $out/starter.wasm"
