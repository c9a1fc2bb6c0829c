#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/tally.wasm with componentize-py
# (pip install -r requirements.txt).
set -euo pipefail
cd "$(dirname "$0")"

out="${OUT:-build}"
mkdir -p "$out"
componentize-py -d wit -w plugin componentize app -o "$out/tally.wasm"
echo "built $out/tally.wasm"
