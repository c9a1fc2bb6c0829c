#!/usr/bin/env bash
# Builds the example plugin ("tally") in every language whose toolchain is installed,
# then runs the `languages` criterion bench on the components: size, cold load, fresh
# instance, and one request through both phases. See BENCHMARKS.md.
#   bash benches/languages.sh            # all languages
#   bash benches/languages.sh rust c     # some
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/target/lang-plugins"
rm -rf "$out"; mkdir -p "$out"
cargo build -q -p sluice
export SLUICE="$root/target/debug/sluice" CARGO_TARGET_DIR="$root/target/tmp/example-plugins"
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust python js c zig go)
for lang in "${langs[@]}"; do
  work=$(mktemp -d)/tally
  "$SLUICE" plugin new tally --lang "$lang" --example tally --dir "$work" >/dev/null
  start=$(date +%s.%N)
  if (cd "$work" && OUT="$work/build" ./build.sh >"$work/build.log" 2>&1); then
    end=$(date +%s.%N)
    cp "$work/build/tally.wasm" "$out/$lang.wasm"
    printf '%s: built in %.1f s, %s bytes\n' "$lang" "$(echo "$end - $start" | bc)" "$(stat -c %s "$out/$lang.wasm")"
  else
    echo "$lang: build failed or toolchain missing (see $work/build.log); skipped"
  fi
done
SLUICE_LANG_PLUGINS="$out" cargo bench -p sluice-benches --bench languages
