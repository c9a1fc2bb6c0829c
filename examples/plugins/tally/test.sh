#!/usr/bin/env bash
# Builds the plugin and runs it offline on each fixture of test/.
set -euo pipefail
cd "$(dirname "$0")"

./build.sh
for case in missing-header counted; do
    "${SLUICE:-sluice}" plugin test "${OUT:-build}/tally.wasm" --config test/config.json \
        --request "test/$case.yaml" --expect "test/$case.expected.json"
done
