#!/usr/bin/env bash
# The README's two commands as a new user meets them: a rustup toolchain without the
# wasm32-wasip2 target, and no redis-server, plugin toolchains or Python packages on
# PATH. `cargo run --release` must add the target itself and serve the embedded
# config (GET /echo/x answers), and `cargo test --workspace` must pass, skipping what
# needs a missing program with a SKIPPED line that names the install command.
#
# Sourced by .ci/run, from the checkout's root: it exports RUSTUP_HOME (a copy of the
# active toolchain, without wasm32-wasip2 until the build adds it) so that the later
# steps build with the very same compiler and reuse the target folder.
set -euo pipefail

work=$(mktemp -d /tmp/sluice-fresh.XXXXXX)

# --- a rustup home with the active toolchain, minus wasm32-wasip2 -----------------
sysroot=$(rustc --print sysroot)
toolchain=$(basename "$sysroot")
bare_home="$work/rustup"
mkdir -p "$bare_home/toolchains"
cp "${RUSTUP_HOME:-$HOME/.rustup}/settings.toml" "$bare_home/"
# Hard links for the bulk (nothing rustup adds a target with rewrites these files);
# real copies for the install metadata, which `rustup target add` rewrites.
cp -al "$sysroot" "$bare_home/toolchains/$toolchain"
rustlib="$bare_home/toolchains/$toolchain/lib/rustlib"
rm -rf "$rustlib/wasm32-wasip2" "$rustlib/manifest-rust-std-wasm32-wasip2"
for f in "$rustlib"/*; do
  if [ -f "$f" ]; then cp --remove-destination "$(readlink -f "$sysroot/lib/rustlib/$(basename "$f")")" "$f"; fi
done
grep -v '^rust-std-wasm32-wasip2$' "$sysroot/lib/rustlib/components" > "$rustlib/components" || true
# rustup's own record of the installed components, in blank-line separated blocks.
awk 'BEGIN { RS = ""; ORS = "\n\n" } !/target = "wasm32-wasip2"/' \
  "$sysroot/lib/rustlib/multirust-config.toml" > "$rustlib/multirust-config.toml"
export RUSTUP_HOME="$bare_home"
if RUSTUP_HOME="$bare_home" rustup target list --installed | grep -q wasm32-wasip2; then
  echo "fresh-machine: the bare toolchain still has wasm32-wasip2" >&2
  exit 1
fi

# --- a PATH without the programs a fresh machine lacks ----------------------------
bare_bin="$work/bin"
mkdir -p "$bare_bin"
absent=" redis-server redis-cli redis-benchmark clang-19 clang wasm-ld lld-19 node nodejs npm npx zig componentize-py go gofmt "
for dir in "$HOME/.cargo/bin" /usr/local/bin /usr/bin /bin /usr/sbin /sbin; do
  [ -d "$dir" ] || continue
  for exe in "$dir"/*; do
    name=$(basename "$exe")
    case "$absent" in *" $name "*) continue ;; esac
    [ -e "$bare_bin/$name" ] || ln -s "$exe" "$bare_bin/$name"
  done
done
for missing in redis-server clang-19 npm componentize-py; do
  if PATH="$bare_bin" command -v "$missing" >/dev/null; then
    echo "fresh-machine: $missing is still on the bare PATH" >&2
    exit 1
  fi
done

run_bare() {
  env -u SLUICE_REQUIRE_TOOLCHAINS PATH="$bare_bin" RUSTUP_HOME="$bare_home" "$@"
}

# --- command 1: cargo run --release serves the embedded config -------------------
echo "== fresh machine: cargo run --release"
log="$work/run.log"
run_bare cargo run --release >"$log" 2>&1 &
gateway=$!
served=""
for _ in $(seq 1 2400); do
  if ! kill -0 "$gateway" 2>/dev/null; then break; fi
  if served=$(curl -sf --max-time 2 http://127.0.0.1:8080/echo/x 2>/dev/null); then break; fi
  sleep 1
done
kill "$gateway" 2>/dev/null || true
pkill -f 'target/release/sluice' 2>/dev/null || true
wait "$gateway" 2>/dev/null || true
grep -E 'warning: .*installing the wasm32-wasip2 target' "$log" || {
  echo "fresh-machine: the build did not say it added the wasm32-wasip2 target" >&2
  tail -40 "$log" >&2
  exit 1
}
case "$served" in
  *'"path": "/echo/x"'*) echo "GET /echo/x answered: $(tr -d ' \n' <<<"$served")" ;;
  *)
    echo "fresh-machine: cargo run --release did not serve GET /echo/x" >&2
    tail -40 "$log" >&2
    exit 1
    ;;
esac

# --- command 2: cargo test --workspace passes, skipping loudly ---------------------
echo "== fresh machine: cargo test --workspace"
tlog="$work/test.log"
if ! run_bare cargo test --workspace 2>&1 | tee "$tlog"; then
  echo "fresh-machine: cargo test --workspace failed" >&2
  exit 1
fi
for skipped in 'redis-server is not installed; install it with: apt-get install -y redis-server' \
  'the c example plugin: clang-19 and wasi-libc is not installed'; do
  grep -q "$skipped" "$tlog" || {
    echo "fresh-machine: no SKIPPED line saying: $skipped" >&2
    exit 1
  }
done
echo "fresh machine: both commands passed; skipped: $(grep -c '^SKIPPED' "$tlog")"
