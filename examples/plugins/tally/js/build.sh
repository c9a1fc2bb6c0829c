#!/usr/bin/env bash
# Builds the plugin component to ${OUT:-build}/tally.wasm with jco and componentize-js.
# Features that would import wasi:http are disabled (the gateway does not link it).
set -euo pipefail
cd "$(dirname "$0")"

# The project's own jco first: package.json's `overrides` pin the WASI shim jco runs
# its tools on to 0.25.0, the last that lets them read files (with 0.26, which a plain
# `npm install -g @bytecodealliance/jco@1.35.0` brings, `jco componentize` fails with
# "failed to get path metadata"), so the build installs and uses the project's own.
if [ ! -x node_modules/.bin/jco ]; then
    npm install --prefer-offline --no-audit --no-fund --loglevel=error
fi
jco=node_modules/.bin/jco
out="${OUT:-build}"
mkdir -p "$out"
"$jco" componentize index.js --wit wit --world-name plugin -d http -d fetch-event -o "$out/tally.wasm"
echo "built $out/tally.wasm"
