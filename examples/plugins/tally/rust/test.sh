#!/usr/bin/env bash
# Runs the native unit tests, builds the component, and runs the offline harness on
# each fixture in test/.
set -euo pipefail
cd "$(dirname "$0")"

# The gateway binary: $SLUICE, else `sluice` on PATH, else a clear message.
SLUICE=${SLUICE:-$(command -v sluice || true)}
if [ -z "$SLUICE" ] || [ ! -x "$SLUICE" ]; then
    echo "test.sh: no sluice binary: set SLUICE=/path/to/sluice or put sluice on PATH" >&2
    echo "  (from a checkout: cargo build --release, then SLUICE=target/release/sluice)" >&2
    exit 127
fi

cargo test
./build.sh
for case in missing-header counted; do
    "$SLUICE" plugin test "${OUT:-build}/tally.wasm" --config test/config.json \
        --request "test/$case.yaml" --expect "test/$case.expected.json"
done
