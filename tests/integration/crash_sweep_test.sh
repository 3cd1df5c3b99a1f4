#!/usr/bin/env bash
# The crash sweep (issue 13, item 3): for every named crash point (src/base/crash_point.hpp,
# read between its markers, so that a new point is swept without a change here), an instance is
# killed by SIGKILL at that point of its operation (checkpoint, upload, download, restore,
# configuration), then started again without the crash, and must show:
#   - the database and env_dir both old or both new: a marker row and a marker file that a
#     restore changes together are equal;
#   - nothing committed before the crash lost: rows committed before it are all there (unless
#     the restore went through and replaced them, as it should);
#   - no partial checkpoint: nothing listed but the checkpoints made whole, each complete;
#   - nothing a restore set aside left behind.
# The instance must die at the point (exit by SIGKILL, the point named in its log): a point
# renamed, removed or no longer reached fails the sweep.
#
# The recovery's points (recovery.*) are swept after a restore killed before its commit and
# one killed after it: the recovery is killed in turn, and the start after that must still
# end with one state. The restore's points are swept twice: with env_dir a plain directory (renamed aside) and,
# where mounting is allowed, with env_dir a mount point (its contents swapped inside it; the
# restore.contents_* points are only reached there).
#
# CRASH_POINTS_ONLY="a b" sweeps only those points (to show one failing on older code).
source "$(dirname "$0")/harness.sh"

# COMMAND: a process that ends once its parent state-manager is gone. A state-manager killed at a
# crash point leaves its children behind (a real PID 1's death takes the container with it; a
# test's does not), and the harness stops only the instances it started. The parent is checked
# by name: one killed right after the spawn leaves the child reparented before it looks (its
# parent then is init, which never goes).
COMMAND=(sh -c 'parent=$PPID; while [ "$(cat /proc/$parent/comm 2>/dev/null)" = state-manager ]; do sleep 0.2; done')

: "${CRASH_POINT_HEADER:?CRASH_POINT_HEADER must name src/base/crash_point.hpp}"
mapfile -t POINTS < <(sed -n '/BEGIN crash points/,/END crash points/p' "$CRASH_POINT_HEADER" |
  grep -o '^ *"[a-z_.]*"' | tr -d ' "')
((${#POINTS[@]} > 0)) || fail "no crash points listed in $CRASH_POINT_HEADER"
if [[ -n ${CRASH_POINTS_ONLY:-} ]]; then
  read -ra POINTS <<<"$CRASH_POINTS_ONLY"
fi

# The points after a restore's commit point (the journal's rename to committed).
COMMITTED_POINTS="restore.after_commit restore.after_db_keep restore.contents_after_trash
  restore.after_env_keep restore.after_journal_removed"
COMMITTED_POINTS=${COMMITTED_POINTS//$'\n'/ }

# The restore's points before env_dir is touched, and the one only a plain env_dir reaches.
BEFORE_ENV_DIR="restore.after_final_sync restore.after_journal restore.db_after_aside
  restore.after_db_rename restore.after_env_rename"
BEFORE_ENV_DIR=${BEFORE_ENV_DIR//$'\n'/ }

config_doc() {
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects"}, "stacks": ["database"]}' "$1"
}
sql() { sqlite3 -cmd ".timeout 10000" data/database.sqlite "$@"; }
get_json() { # get_json PATH PY_EXPR: prints the expression's value, with j the parsed body
  curl -s --max-time "$DEADLINE" "$SM_URL$1" |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2" 2>/dev/null
}
database_running() { [[ $(get_json / 'j["components"]["database"]["state"]') == running ]]; }
uploaded() { [[ $(get_json "/checkpoints/$1" 'j["upload"]["state"]') == done ]]; }
every_local_checkpoint_uploaded() {
  [[ $(get_json /checkpoints 'all(c["upload"]["state"] == "done" for c in j["checkpoints"] if c["location"] == "local")') == True ]]
}

# The template every point starts from: checkpoint cp1 holds marker A (row and file), uploaded;
# then the marker is B and three rows are committed. Stopped cleanly.
make_template() {
  mkdir "$TEST_DIR/template"
  cd "$TEST_DIR/template"
  sm_start -- "${COMMAND[@]}"
  req POST /config -d "$(config_doc "$TEST_DIR/template")"
  expect_status 200
  wait_until "the database running" database_running
  sql "CREATE TABLE marker(v TEXT); INSERT INTO marker VALUES ('A'); CREATE TABLE kept(n INTEGER)"
  mkdir -p data/env/sub
  echo A >data/env/marker
  echo one >data/env/sub/one
  head -c 300000 /dev/urandom >data/env/sub/blob
  req POST /checkpoint -d '{"id": "cp1"}'
  expect_status 200
  wait_until "cp1 uploaded" uploaded cp1
  sql "UPDATE marker SET v = 'B'; INSERT INTO kept VALUES (1), (2), (3)"
  echo B >data/env/marker
  sm_stop
  ((SM_EXIT == 0)) || fail "the template's instance exited with $SM_EXIT"
  # The download points restore cp1 from the store: this machine no longer has it.
  cp -a "$TEST_DIR/template" "$TEST_DIR/template-download"
  rm -rf "$TEST_DIR/template-download/tmp/checkpoints/cp1"
  # The configuration points apply the configuration to an instance that has none yet.
  cp -a "$TEST_DIR/template" "$TEST_DIR/template-config"
  rm -f "$TEST_DIR/template-config/tmp/config.json"
  cd "$TEST_DIR"
}

# After the restart: one state, nothing lost, nothing partial, nothing left aside.
check_after() {
  local point=$1 want=$2 db file
  db=$(sql "SELECT v FROM marker") || fail "$point: the database cannot be read"
  file=$(cat data/env/marker 2>/dev/null) || file="(missing)"
  [[ $db == "$file" ]] || fail "$point: mixed state after the crash: database $db, env_dir $file"
  [[ $db == A || $db == B ]] || fail "$point: marker $db"
  # A restore stands once its journal is committed (rolled forward), and not before (rolled
  # back); nothing else changes the state.
  [[ $db == "$want" ]] || fail "$point: the state after the crash is ${db}, expected $want"
  if [[ $db == B ]]; then
    [[ $(sql "SELECT count(*) FROM kept") == 3 ]] || fail "$point: rows committed before the crash are lost"
    [[ $(cat data/env/sub/one) == one ]] || fail "$point: env_dir lost a file"
  else
    [[ $(sql "SELECT count(*) FROM kept") == 0 ]] || fail "$point: restored database is not cp1's"
  fi
  cmp -s data/env/sub/blob "$TEST_DIR/template/data/env/sub/blob" || fail "$point: env_dir's blob differs"
  [[ $(sql "PRAGMA integrity_check") == ok ]] || fail "$point: the database fails integrity_check"
  # Nothing partial: only cp1 and cp2 listed, each whole (its copy holds the state it was made of).
  req GET /checkpoints
  expect_status 200
  expect_json 'set(c["id"] for c in j["checkpoints"]) <= {"cp1", "cp2"} and "cp1" in [c["id"] for c in j["checkpoints"]]'
  expect_json 'j["store_error"] is None'
  [[ -z $(find tmp/checkpoints -maxdepth 1 -name '*.partial') ]] || fail "$point: a .partial is left"
  local id
  for id in cp1 cp2; do
    [[ -d tmp/checkpoints/$id ]] || continue
    local want=A
    [[ $id == cp1 ]] || want=B
    [[ $(cat "tmp/checkpoints/$id/mount/marker") == "$want" ]] || fail "$point: $id's env_dir copy is not whole"
    [[ $(sqlite3 "tmp/checkpoints/$id/database.sqlite" "SELECT v FROM marker") == "$want" ]] ||
      fail "$point: $id's database copy is not whole"
  done
  # What a restore set aside is put back or gone.
  local left
  left=$(find data -maxdepth 1 -name '*restor*' -not -name '*-trash' -printf '%f ')
  [[ -z $left ]] || fail "$point: left behind by the restore: $left"
  left=$(find data/env -maxdepth 1 -name '.state-manager-restore-*' -printf '%f ')
  [[ -z $left ]] || fail "$point: left behind in env_dir by the restore: $left"
}

# env_dir becomes a mount point of its own (a small tmpfs) holding the same files.
mount_env_dir() {
  mv data/env data/env-files
  mount_tmpfs "$PWD/data/env" 16m || fail "mounting was allowed a moment ago"
  cp -a data/env-files/. data/env/
  rm -rf data/env-files
}

sweep_one() {
  local point=$1 mounted=$2 kind=${1%%.*} template=template dir=$TEST_DIR/p-$1
  case $kind in
  download) template=template-download ;;
  config) template=template-config ;;
  esac
  cp -a "$TEST_DIR/$template" "$dir"
  [[ ! -f $dir/tmp/config.json ]] ||
    sed -i "s|$TEST_DIR/$template/objects|$dir/objects|" "$dir/tmp/config.json"
  cd "$dir"
  [[ $mounted != mounted ]] || mount_env_dir

  export STATE_MANAGER_CRASH_AT=$point
  sm_start -- "${COMMAND[@]}"
  unset STATE_MANAGER_CRASH_AT
  local crashing=$SM_PID crash_log=$SM_LOG
  if [[ $kind != config ]]; then wait_until "$point: the database running" database_running; fi
  case $kind in
  checkpoint | upload) req POST /checkpoint -d '{"id": "cp2"}' ;;
  restore | download) req POST /restore -d '{"id": "cp1"}' ;;
  config) req POST /config -d "$(config_doc "$dir")" ;;
  esac
  # An upload runs after the checkpoint's answer: it may take a moment to reach its point.
  wait_exit "$crashing" || fail "$point: still running after ${DEADLINE}s: the crash point was not reached"
  local code=0
  wait "$crashing" || code=$?
  ((code == 137)) || fail "$point: exited with $code, not killed at the point"
  grep -q "crash point $point: killed" "$crash_log" || fail "$point: not killed at its crash point"

  sm_start -- "${COMMAND[@]}"
  if [[ ! -f tmp/config.json ]]; then
    req POST /config -d "$(config_doc "$dir")"
    expect_status 200
  fi
  wait_until "$point: the database running after the crash" database_running
  local want=B
  [[ " $COMMITTED_POINTS " != *" $point "* ]] || want=A
  check_after "$point" "$want"
  # A checkpoint made whole before the crash reaches the store after it (the upload that the
  # crash cut short is done again).
  wait_until "$point: every local checkpoint uploaded" every_local_checkpoint_uploaded
  [[ ! -d tmp/checkpoints/cp2 || -f objects/env-bucket/checkpoints/cp2/manifest.json ]] ||
    fail "$point: cp2 is said to be uploaded, but its manifest is not in the store"
  # The configuration's copy in the store, whose upload a crash may have cut short.
  wait_until "$point: the configuration backed up" test -f objects/env-bucket/config.json
  sm_stop
  ((SM_EXIT == 0)) || fail "$point: the restarted instance exited with $SM_EXIT"
  if [[ $mounted == mounted ]]; then
    umount "$dir/data/env" || fail "cannot unmount $dir/data/env"
    MOUNTED=()  # one at a time: nothing left for the harness to unmount
  fi
  cd "$TEST_DIR"
  rm -rf "$dir"
}

# A restore killed at $1, then the recovery at start-up killed at $2, then a clean start.
sweep_recovery() {
  local first=$1 point=$2 want=$3 dir=$TEST_DIR/r-$2
  cp -a "$TEST_DIR/template" "$dir"
  sed -i "s|$TEST_DIR/template/objects|$dir/objects|" "$dir/tmp/config.json"
  cd "$dir"
  export STATE_MANAGER_CRASH_AT=$first
  sm_start -- "${COMMAND[@]}"
  unset STATE_MANAGER_CRASH_AT
  local crashing=$SM_PID code=0
  wait_until "$first: the database running" database_running
  req POST /restore -d '{"id": "cp1"}'
  wait_exit "$crashing" || fail "$first: still running: the crash point was not reached"
  wait "$crashing" || code=$?
  ((code == 137)) || fail "$first: exited with $code, not killed at the point"
  # The recovery runs before the API listens: the instance dies during its start.
  STATE_MANAGER_CRASH_AT=$point "$STATE_MANAGER_BIN" --listen 127.0.0.1:0 -- "${COMMAND[@]}" \
    >"$LOG_DIR/recovery-$point-$first.log" 2>&1 &
  crashing=$!
  STARTED_PIDS+=("$crashing")
  wait_exit "$crashing" || fail "$first, then $point: still running: the recovery's crash point was not reached"
  code=0
  wait "$crashing" || code=$?
  ((code == 137)) || fail "$first, then $point: exited with $code, not killed at the point"
  grep -q "crash point $point: killed" "$LOG_DIR/recovery-$point-$first.log" ||
    fail "$first, then $point: not killed at its crash point"
  sm_start -- "${COMMAND[@]}"
  wait_until "$first, then $point: the database running" database_running
  check_after "$first, then $point" "$want"
  sm_stop
  ((SM_EXIT == 0)) || fail "$first, then $point: the restarted instance exited with $SM_EXIT"
  cd "$TEST_DIR"
  rm -rf "$dir"
}

make_template
can_mount=yes
if mount_tmpfs "$TEST_DIR/mount-probe" 1m; then
  umount "$TEST_DIR/mount-probe"
  MOUNTED=()
else
  can_mount=no
  log "mounting is not allowed here: the restore's points are swept with a plain env_dir only"
fi
started=$SECONDS
swept=0
for point in "${POINTS[@]}"; do
  if [[ $point == recovery.* ]]; then
    sweep_recovery restore.after_env_copy "$point" B
    log "survived a crash at $point, after a restore's crash before its commit"
    swept=$((swept + 1))
    # The database's files are put back only by a rollback.
    if [[ $point != recovery.db_* ]]; then
      sweep_recovery restore.after_commit "$point" A
      log "survived a crash at $point, after a restore's crash after its commit"
      swept=$((swept + 1))
    fi
    continue
  fi
  if [[ $point != restore.contents_* ]]; then
    sweep_one "$point" plain
    log "survived a crash at $point"
    swept=$((swept + 1))
  fi
  # With env_dir a mount point, from the points where env_dir's part begins (before them the
  # two passes do the same).
  if [[ $can_mount == yes && $point == restore.* && " $BEFORE_ENV_DIR " != *" $point "* ]]; then
    sweep_one "$point" mounted
    log "survived a crash at $point (env_dir a mount point)"
    swept=$((swept + 1))
  fi
done
log "$swept crashes at ${#POINTS[@]} crash points swept in $((SECONDS - started)) s"
