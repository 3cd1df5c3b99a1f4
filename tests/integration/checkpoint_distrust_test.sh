#!/usr/bin/env bash
# Downloads distrust the store (file://, whose objects are plain files under
# <root>/<bucket>/<key>, easy to tamper with): machine a uploads checkpoints; in the store one
# file object is damaged, two are swapped, an index is replaced by a 200 MiB one. A fresh
# machine b on the same store refuses each of them with nothing applied (env_dir, the database
# and tmp/checkpoints unchanged) and without reading the huge index into memory. A whole
# checkpoint restores without its set-user-ID bit and file capability (security.capability),
# counted in the answer; machine c, whose configuration says "restore_privileged": true, gets
# them back. A file with a 2000-byte path and one whose name is not UTF-8 go up and come back.
#
# The tampering finds objects by their content, so that the test runs against any layout.
# DISTRUST_KEEP_GOING=1 reports every failed check instead of stopping at the first (to see
# each case fail on an older build).
source "$(dirname "$0")/harness.sh"

failures=0
check() {  # check MESSAGE COMMAND...: COMMAND must succeed
  local message=$1
  shift
  if ! "$@"; then
    [[ -n ${DISTRUST_KEEP_GOING:-} ]] || fail "$message"
    log "FAILED: $message"
    failures=$((failures + 1))
  fi
}

config() {  # config [EXTRA TOP-LEVEL FIELDS]
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects"}, "stacks": ["database"]%s}' \
    "$TEST_DIR" "${1:+, $1}"
}
store=$TEST_DIR/objects/env-bucket
upload_state() {  # upload_state ID: the state GET /checkpoints/ID gives its upload
  curl -s "$SM_URL/checkpoints/$1" |
    python3 -c 'import json,sys; u=json.load(sys.stdin).get("upload") or {}; print(u.get("state"))'
}
upload_ended() { [[ $(upload_state "$1") == done || $(upload_state "$1") == failed ]]; }
# object_with ID TEXT: the object files of checkpoint ID in the store whose content is TEXT.
object_with() { grep -rlx -- "$2" "$store/checkpoints/$1/" | grep -v -e manifest -e index || true; }
peak_rss_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# --- Machine a: files with a set-user-ID bit and a capability, and two plain ones.
mkdir -p a/data/env
cd a
echo marker-one >data/env/one
echo marker-two >data/env/two
echo marker-suid >data/env/suid
chmod 4755 data/env/suid
echo marker-cap >data/env/cap
has_caps=0
if setcap cap_net_raw+ep data/env/cap 2>/dev/null && getcap data/env/cap | grep -q cap_net_raw; then
  has_caps=1
else
  log "cannot set file capabilities here: the capability checks are skipped"
fi
sm_start -- sleep 1000
req POST /config -d "$(config)"
expect_status 200
for id in damaged swapped huge; do
  req POST /checkpoint -d "{\"id\": \"$id\"}"
  expect_status 200
done
for id in damaged swapped huge; do
  wait_until "the upload of $id to end" upload_ended "$id"
  check "the upload of $id: $(upload_state "$id")" test "$(upload_state "$id")" == done
done
# Then a path of over 2000 bytes (10 directories of 200 bytes) and a name that is not UTF-8.
long=$(python3 -c 'print("/".join(["d" * 200] * 10))')
mkdir -p "data/env/$long"
echo marker-long >"data/env/$long/file"
bad=$'name\xff\xfe'
echo marker-bad >"data/env/$bad"
req POST /checkpoint -d '{"id": "good"}'
expect_status 200
wait_until "the upload of good to end" upload_ended good
check "a checkpoint with a 2000-byte path and a non-UTF-8 name is not uploaded: $(upload_state good)" \
  test "$(upload_state good)" == done
sm_stop
cd "$TEST_DIR"

# --- The store is tampered with.
damaged=$(object_with damaged marker-one)
[[ -n $damaged ]] || fail "no object holds marker-one"
echo marker-0ne >"$damaged"  # the same size, other bytes
one=$(object_with swapped marker-one)
two=$(object_with swapped marker-two)
[[ -n $one && -n $two ]] || fail "no objects for the swap"
mv "$one" "$TEST_DIR/swap.tmp"
mv "$two" "$one"
mv "$TEST_DIR/swap.tmp" "$two"
index=$(ls "$store/checkpoints/huge/"index*.json)
truncate -s 200M "$index"  # the index, then 200 MiB of zeros

# --- Machine b refuses each, with nothing applied.
mkdir -p b/data/env
cd b
echo b-original >data/env/mine
sm_start -- sleep 1000
req POST /config -d "$(config)"
expect_status 200
sqlite3 -cmd ".timeout 5000" data/database.sqlite "CREATE TABLE t(v); INSERT INTO t(v) VALUES ('b-row')"
unchanged() {
  [[ $(cat data/env/mine) == b-original && ! -e data/env/one ]] &&
    [[ $(sqlite3 -cmd ".timeout 5000" data/database.sqlite "SELECT group_concat(v) FROM t") == b-row ]]
}
for id in damaged swapped huge; do
  req POST /restore -d "{\"id\": \"$id\"}"
  check "restoring $id (tampered with) answered $STATUS: $BODY" test "$STATUS" != 200
  check "restoring $id changed env_dir or the database" unchanged
  check "restoring $id left a local checkpoint" test ! -e "tmp/checkpoints/$id" -a ! -e "tmp/checkpoints/$id.partial"
done
peak=$(peak_rss_kib "$SM_PID")
check "the 200 MiB index was read into memory: peak RSS ${peak} KiB" test "$peak" -lt 102400

# A whole checkpoint: restored, without the set-user-ID bit and the capability.
req POST /restore -d '{"id": "good"}'
check "restoring good answered $STATUS: $BODY" test "$STATUS" == 200
if [[ $STATUS == 200 ]]; then
  expected=$((1 + has_caps))
  check "dropped_privileged is not $expected: $BODY" \
    python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1])).get('dropped_privileged') != $expected)" "$BODY_FILE"
  check "one: $(cat data/env/one)" test "$(cat data/env/one)" == marker-one
  check "two: $(cat data/env/two)" test "$(cat data/env/two)" == marker-two
  check "the long path's file" test "$(cat "data/env/$long/file")" == marker-long
  check "the file whose name is not UTF-8" test "$(cat "data/env/$bad")" == marker-bad
  check "the set-user-ID bit was restored: $(stat -c %a data/env/suid)" test "$(stat -c %a data/env/suid)" == 755
  if ((has_caps)); then
    check "the capability was restored: $(getcap data/env/cap)" test -z "$(getcap data/env/cap)"
  fi
fi
sm_stop
cd "$TEST_DIR"

# --- Machine c opts in: the same checkpoint comes back with them.
mkdir -p c/data/env
cd c
sm_start -- sleep 1000
req POST /config -d "$(config '"restore_privileged": true')"
check "the configuration with restore_privileged: $STATUS $BODY" test "$STATUS" == 200
req POST /restore -d '{"id": "good"}'
check "restoring good with restore_privileged answered $STATUS: $BODY" test "$STATUS" == 200
check "the set-user-ID bit was not restored: $(stat -c %a data/env/suid 2>&1)" test "$(stat -c %a data/env/suid 2>&1)" == 4755
if ((has_caps)); then
  check "the capability was not restored: $(getcap data/env/cap 2>&1)" sh -c 'getcap data/env/cap | grep -q cap_net_raw'
fi
sm_stop
((failures == 0)) || fail "$failures checks failed"
log "ok"
