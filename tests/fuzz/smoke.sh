#!/usr/bin/env bash
# The fuzz targets' short, fixed run in every test run (CI included): builds the libFuzzer
# targets with clang in a build directory of their own (inside this build's, so a clean clone
# starts clean), then feeds each a fixed number of inputs from a fixed seed, starting from its
# seeds. Any crash, sanitizer report or leak fails the test. Long runs are by hand:
# tools/fuzz-parser, tools/fuzz-checkpoint-index, and tests/fuzz/meson.build's note for the
# configuration validator.
set -euo pipefail
: "${SOURCE_ROOT:?}" "${BUILD_ROOT:?}"
RUNS=${FUZZ_SMOKE_RUNS:-100000}

command -v clang++ >/dev/null || { echo "FAIL: clang++ is needed (tools/install-deps --test installs it)" >&2; exit 1; }
fuzz_build=$BUILD_ROOT/fuzz-smoke
if [[ ! -f $fuzz_build/build.ninja ]]; then
  CXX=clang++ meson setup "$fuzz_build" "$SOURCE_ROOT" -Dfuzz=true -Dtests=false \
    --buildtype=debugoptimized >"$BUILD_ROOT/fuzz-smoke-setup.log" 2>&1 ||
    { cat "$BUILD_ROOT/fuzz-smoke-setup.log" >&2; echo "FAIL: meson setup of the fuzz build" >&2; exit 1; }
fi
targets=(request_parser_fuzz config_fuzz checkpoint_index_fuzz)
# Only the fuzz targets: the rest of the project needs GCC's coroutines.
ninja -C "$fuzz_build" "${targets[@]/#/tests/fuzz/}" >"$BUILD_ROOT/fuzz-smoke-build.log" 2>&1 ||
  { tail -50 "$BUILD_ROOT/fuzz-smoke-build.log" >&2; echo "FAIL: building the fuzz targets" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sm-fuzz-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  corpus=$work/$target
  mkdir -p "$corpus"
  seeds=()
  case $target in
    config_fuzz) seeds=("$SOURCE_ROOT/tests/fuzz/config_seeds") ;;
    checkpoint_index_fuzz) seeds=("$SOURCE_ROOT/tests/fuzz/checkpoint_index_seeds") ;;
  esac
  started=$SECONDS
  if ! "$fuzz_build/tests/fuzz/$target" -runs="$RUNS" -seed=1 -max_len=8192 \
      -artifact_prefix="$work/" "$corpus" "${seeds[@]}" >"$work/$target.log" 2>&1; then
    tail -40 "$work/$target.log" >&2
    echo "FAIL: $target found a problem; the input is in the log above" >&2
    exit 1
  fi
  echo "$target: $RUNS inputs in $((SECONDS - started)) s, $(grep -o 'cov: [0-9]*' "$work/$target.log" | tail -1)"
done
