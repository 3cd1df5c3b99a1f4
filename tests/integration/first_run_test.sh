#!/usr/bin/env bash
# The README's first command on a machine without the test packages (issue 12, item 1):
# tools/build-and-run, in a fresh build directory, configures and builds state-manager with
# Boost out of sight, and the binary it runs answers --version. Nothing is uninstalled: in a
# mount namespace of its own (we are root), empty directories and files are bind-mounted over
# every place meson's Boost finder looks (boost/version.hpp under the include roots; libboost_*
# and Boost's CMake configurations in the library directories). The control, with the same
# hiding: the configuration with the tests fails to find Boost, so the hiding works.
#
# The fresh build directory is an empty directory mounted over the checkout's build/ (inside the
# namespace only; the real one is untouched): the same paths as the suite's own build, so ccache
# (when installed) serves the compilations from the suite's build. The one write to the checkout
# is build-and-run's ./state-manager -> build/state-manager, the link build-and-test also makes.
#
# Needs SOURCE_ROOT (the checkout), from tests/integration/meson.build.

# Inside the namespace (the test runs itself again through unshare, below).
if [[ ${1:-} == --inside ]]; then
  set -euo pipefail
  say() { printf '[first_run_test] %s\n' "$*" >&2; }
  die() { printf 'FAIL [first_run_test]: %s\n' "$*" >&2; exit 1; }

  empty_dir=$TEST_DIR/empty-dir
  empty_file=$TEST_DIR/empty-file
  mkdir -p "$empty_dir"
  : >"$empty_file"
  shopt -s nullglob
  hidden=0
  for dir in /usr/include /usr/local/include /usr/include/*-linux-gnu; do
    for path in "$dir"/boost "$dir"/boost-*; do
      [[ -d $path ]] || continue
      mount --bind "$empty_dir" "$path"
      hidden=$((hidden + 1))
    done
  done
  declare -A seen=()
  for dir in /usr/lib /usr/lib64 /usr/lib/*-linux-gnu /usr/local/lib /usr/local/lib64; do
    for path in "$dir"/libboost_* "$dir"/cmake/[Bb]oost*; do
      target=$(readlink -f "$path") || continue
      [[ -e $target && -z ${seen[$target]:-} ]] || continue
      seen[$target]=1
      if [[ -d $target ]]; then mount --bind "$empty_dir" "$target"
      else mount --bind "$empty_file" "$target"; fi
      hidden=$((hidden + 1))
    done
  done
  unset BOOST_ROOT BOOST_INCLUDEDIR BOOST_LIBRARYDIR
  say "hid $hidden Boost paths"
  if printf '#include <boost/version.hpp>\n' | c++ -E -x c++ - >/dev/null 2>&1; then
    die "boost/version.hpp is still reachable after hiding"
  fi

  # The control: the test configuration must not find Boost now.
  if meson setup "$TEST_DIR/control" "$SOURCE_ROOT" --buildtype=release -Dtests=true \
      >"$LOG_DIR/control-setup.log" 2>&1; then
    die "meson set up the tests (-Dtests=true) with Boost hidden: the hiding does not work"
  fi
  grep -qi 'boost' "$LOG_DIR/control-setup.log" ||
    die "meson setup -Dtests=true failed, but not for want of Boost (control-setup.log)"
  say "control: -Dtests=true fails to find Boost"

  # The real thing: build-and-run in a fresh build/. It must install nothing (the build
  # packages are there, and the hiding does not fool dpkg): apt-get and sudo fail if called.
  mkdir -p "$TEST_DIR/build" "$TEST_DIR/stubs"
  mount --bind "$TEST_DIR/build" "$SOURCE_ROOT/build"
  for stub in apt-get sudo; do
    printf '#!/bin/sh\necho "first_run_test: %s called: install-deps wants to install" >&2\nexit 1\n' \
      "$stub" >"$TEST_DIR/stubs/$stub"
    chmod +x "$TEST_DIR/stubs/$stub"
  done
  start=$SECONDS
  PATH=$TEST_DIR/stubs:$PATH "$SOURCE_ROOT/tools/build-and-run" --version \
      >"$TEST_DIR/version.out" 2>"$LOG_DIR/build-and-run.log" ||
    die "tools/build-and-run --version failed with Boost hidden (build-and-run.log)"
  say "tools/build-and-run --version: configured, built and ran in $((SECONDS - start)) s"
  [[ -x $SOURCE_ROOT/build/state-manager ]] || die "no build/state-manager in the fresh build"
  [[ ! -e $SOURCE_ROOT/build/tests ]] || die "the fresh build configured the tests"
  exit 0
fi

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")  # the harness changes directory
source "$(dirname "$0")/harness.sh"
: "${SOURCE_ROOT:?SOURCE_ROOT must name the checkout}"
[[ -x $SOURCE_ROOT/tools/build-and-run ]] || fail "no $SOURCE_ROOT/tools/build-and-run"

if ! unshare --mount --propagation private true 2>/dev/null; then
  log "skipped: no mount namespace here (needs root)"
  exit 77
fi
# The mount point of the fresh build directory; build-and-run would create it anyway.
mkdir -p "$SOURCE_ROOT/build"

export TEST_DIR LOG_DIR SOURCE_ROOT
unshare --mount --propagation private -- "$BASH" "$self" --inside ||
  fail "tools/build-and-run with Boost hidden (logs below)"

# build-and-run's stdout: meson's and ninja's output, then the binary's (its last line).
answer=$(tail -n 1 "$TEST_DIR/version.out")
expected=$("$STATE_MANAGER_BIN" --version)
[[ -n $expected ]] || fail "state-manager --version printed nothing"
[[ $answer == "$expected" ]] ||
  fail "the fresh binary's --version said '$answer', not '$expected'"
log "passed: the fresh build answers '$answer'"
