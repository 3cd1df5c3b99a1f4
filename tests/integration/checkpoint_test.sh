#!/usr/bin/env bash
# POST /checkpoint and POST /restore (issue 6, first part: local; upload is not built yet):
# the seed's verification steps literally, the database copied consistently while it is
# replicated, COMMAND stopped and started again (new PID), automatic ids, a taken id, the
# events, and a disk that fills up during the copy (507, nothing left, COMMAND running again).
source "$(dirname "$0")/harness.sh"

sm_start -- sleep 1000
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\"},
  \"stacks\": [\"database\"]}"
expect_status 200
curl -sN --max-time 60 "$SM_URL/events" >"$TEST_DIR/events" &
EVENTS_PID=$!
STARTED_PIDS+=("$EVENTS_PID")
wait_until "the event stream" test -e "$TEST_DIR/events"

# The seed: checkpoint test1, ls -l tmp/checkpoints/test1.
req POST /checkpoint -d '{"id": "test1"}'
expect_status 200
expect_json_response
ls -l tmp/checkpoints/test1 >/dev/null || fail "tmp/checkpoints/test1 is missing"

# The seed: a file written before checkpoint test2 is at tmp/checkpoints/test2/mount/test.txt.
mkdir -p data/env/deep/er
echo "checkpoint me" >data/env/test.txt
ln -s test.txt data/env/link
head -c 3000000 /dev/urandom >data/env/deep/er/blob
sqlite3 -cmd ".timeout 5000" data/database.sqlite \
  "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('one'), ('two')"
req GET /
pid_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
req POST /checkpoint -d '{"id": "test2"}'
expect_status 200
expect_json 'j["id"] == "test2" and j["manifest"]["parent"] == "test1" and j["manifest"]["mount"]["files"] == 2'
expect_json 'j["manifest"]["database"]["sha256"] and set(j["manifest"]["steps_ms"]) >= {"quiesce", "snapshot", "resume"}'
[[ $(cat tmp/checkpoints/test2/mount/test.txt) == "checkpoint me" ]] || fail "mount/test.txt is not the file"
[[ $(readlink tmp/checkpoints/test2/mount/link) == test.txt ]] || fail "the symlink was not kept as one"
cmp data/env/deep/er/blob tmp/checkpoints/test2/mount/deep/er/blob || fail "the blob differs"
[[ $(sqlite3 tmp/checkpoints/test2/database.sqlite "SELECT group_concat(v) FROM t") == "one,two" ]] ||
  fail "the database copy does not have the rows"
[[ $(sqlite3 tmp/checkpoints/test2/database.sqlite "PRAGMA integrity_check") == ok ]] || fail "the copy fails integrity_check"
[[ $(sha256sum <tmp/checkpoints/test2/database.sqlite | cut -d' ' -f1) == \
  $(python3 -c 'import json; print(json.load(open("tmp/checkpoints/test2/manifest.json"))["database"]["sha256"])') ]] ||
  fail "the manifest's checksum is not the copy's"
# The configuration beside it is the one GET /config shows (secrets redacted: it is uploaded).
req GET /config
python3 - "$BODY_FILE" tmp/checkpoints/test2/config.json <<'EOF' || fail "the configuration copy is not GET /config's"
import json, sys
assert json.load(open(sys.argv[1])) == json.load(open(sys.argv[2]))
EOF
# COMMAND was stopped for the snapshot and runs again, as a new process.
wait_until "COMMAND running again" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; p=json.load(sys.stdin)[\"process\"]; sys.exit(0 if p[\"state\"] == \"running\" and p[\"pid\"] != $pid_before else 1)'"
# Changes after the checkpoint stay out of it.
echo "later" >data/env/test.txt
[[ $(cat tmp/checkpoints/test2/mount/test.txt) == "checkpoint me" ]] || fail "the checkpoint follows the live file"

# Without an id: v1, v2, ...; a taken id is 409; nothing half-made remains.
req POST /checkpoint -d '{}'
expect_status 200
expect_json 'j["id"] == "v1"'
req POST /checkpoint
expect_status 200
expect_json 'j["id"] == "v2"'
req POST /checkpoint -d '{"id": "test1"}'
expect_status 409
expect_json_response
req GET /
expect_json 'j["checkpoints"] == {"count": 4, "latest": "v2"} and j["operation"] is None'
req GET /checkpoints
expect_json '[c["id"] for c in j["checkpoints"]] == ["test1", "test2", "v1", "v2"]'
expect_json 'all(c["upload"]["state"] in ("pending", "uploading", "done") for c in j["checkpoints"])'
[[ -z $(find tmp/checkpoints -maxdepth 1 -name '*.partial') ]] || fail "a .partial was left"
wait_until "the operation's events" grep -q '"kind":"checkpoint","step":"snapshot"' "$TEST_DIR/events"
grep -q '"id":"test2","kind":"checkpoint","step":"done"' "$TEST_DIR/events" || fail "no done event: $(cat "$TEST_DIR/events")"
kill "$EVENTS_PID"

# A leftover <id>.partial counts as taken until the next start removes it.
touch tmp/checkpoints/broken.partial
req POST /checkpoint -d '{"id": "broken"}'
expect_status 409
rm -f tmp/checkpoints/broken.partial

# Disk full during the copy: 507 with the error, no partial checkpoint left, COMMAND running
# again. tmp/checkpoints becomes a 1 MiB file system for this (the 3 MB blob does not fit).
if mount_tmpfs "$PWD/tmp/checkpoints" 1m; then
  req GET /
  pid_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
  req POST /checkpoint -d '{"id": "full"}'
  expect_status 507
  expect_json_response
  expect_json '"No space left" in j["error"] or "space" in j["error"]'
  [[ -z $(ls -A tmp/checkpoints) ]] || fail "a failed checkpoint left $(ls -A tmp/checkpoints)"
  wait_until "COMMAND running again after the failure" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; p=json.load(sys.stdin)[\"process\"]; sys.exit(0 if p[\"state\"] == \"running\" and p[\"pid\"] != $pid_before else 1)'"
  req GET /
  expect_json 'j["operation"] is None'
  umount "$PWD/tmp/checkpoints"
  MOUNTED=()
else
  log "cannot mount a tmpfs here: the disk-full case is skipped"
fi

# Each checkpoint goes up to the store in the background.
wait_until "test2 in the store" sh -c "curl -s '$SM_URL/checkpoints/test2' | grep -q '\"state\":\"done\"'"
[[ -e $TEST_DIR/objects/env-bucket/checkpoints/test2/manifest.json ]] || fail "no manifest in the store"
python3 - "$TEST_DIR/objects/env-bucket/checkpoints/test2" <<'EOF' || fail "no blob in the store"
import json, os, sys
d = sys.argv[1]
sha = json.load(open(d + "/manifest.json"))["store"]["index_sha256"]
blob = [e for e in json.load(open(d + "/index-" + sha + ".json")) if e["path"] == "mount/deep/er/blob"]
assert blob and os.path.exists(d + "/files/" + blob[0]["sha256"]), blob
EOF

# Restore test2: files and rows changed after it come back as they were, COMMAND restarts with a
# new PID, the database is replicated again (a new generation).
echo "changed" >data/env/test.txt
echo "new file" >data/env/added.txt
rm data/env/link
sqlite3 -cmd ".timeout 5000" data/database.sqlite "DELETE FROM t WHERE v = 'one'; INSERT INTO t(v) VALUES ('three')"
req GET /
pid_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
generation_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["database"]["replication"]["generation"])' "$BODY_FILE")
req POST /restore -d '{"id": "test2"}'
expect_status 200
expect_json_response
expect_json 'j["id"] == "test2" and j["restored"]["id"] == "test2"'
[[ $(cat data/env/test.txt) == "checkpoint me" ]] || fail "test.txt not restored"
[[ ! -e data/env/added.txt ]] || fail "a file added after the checkpoint survived the restore"
[[ $(readlink data/env/link) == test.txt ]] || fail "the symlink was not restored"
cmp data/env/deep/er/blob tmp/checkpoints/test2/mount/deep/er/blob || fail "the blob was not restored"
[[ $(sqlite3 -cmd ".timeout 5000" data/database.sqlite "SELECT group_concat(v) FROM t") == "one,two" ]] ||
  fail "the rows were not restored: $(sqlite3 data/database.sqlite 'SELECT group_concat(v) FROM t')"
# What the restore replaced is removed in the background, soon.
wait_until "the replaced state removed" sh -c '! ls -A data | grep -q restore'
[[ ! -e data/.restore-aside ]] || fail "restore left its aside copy"
wait_until "COMMAND running again after the restore" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; p=json.load(sys.stdin)[\"process\"]; sys.exit(0 if p[\"state\"] == \"running\" and p[\"pid\"] != $pid_before else 1)'"
new_generation() {
  curl -s "$SM_URL/" | python3 -c "import json,sys; j=json.load(sys.stdin); d=j['components']['database']; sys.exit(0 if d['state'] == 'running' and d['replication']['generation'] not in (None, '$generation_before') and j['operation'] is None else 1)"
}
# Replication starts anew in the background (COMMAND does not wait for its snapshot).
wait_until "a new replication generation" new_generation
# The checkpoint itself is untouched by its restore, and can be restored again.
[[ $(cat tmp/checkpoints/test2/mount/test.txt) == "checkpoint me" ]] || fail "restore changed the checkpoint"
req POST /restore -d '{"id": "nosuch"}'
expect_status 404
# A database copy that fails its checksum: 500, and the current state is untouched.
echo "current" >data/env/test.txt
printf 'X' | dd of=tmp/checkpoints/test1/database.sqlite bs=1 seek=100 conv=notrunc 2>/dev/null
req POST /restore -d '{"id": "test1"}'
expect_status 500
expect_json '"checksum" in j["error"]'
[[ $(cat data/env/test.txt) == "current" ]] || fail "a refused restore changed the state"

sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"

# Another machine (its own directory, the same bucket, once the lease is free) restores test2
# from the store.
mkdir -p "$TEST_DIR/b"
cd "$TEST_DIR/b"
sm_start -- sleep 1000
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\"},
  \"stacks\": [\"database\"]}"
expect_status 200
req POST /restore -d '{"id": "test2"}'
expect_status 200
[[ $(cat data/env/test.txt) == "checkpoint me" ]] || fail "b: test.txt not restored from the store"
[[ $(readlink data/env/link) == test.txt ]] || fail "b: the symlink was not restored"
cmp data/env/deep/er/blob "$TEST_DIR/tmp/checkpoints/test2/mount/deep/er/blob" || fail "b: the blob differs"
[[ $(sqlite3 -cmd ".timeout 5000" data/database.sqlite "SELECT group_concat(v) FROM t") == "one,two" ]] ||
  fail "b: the rows were not restored"
[[ -d tmp/checkpoints/test2 ]] || fail "b: the downloaded checkpoint is not kept"
req POST /restore -d '{"id": "nowhere"}'
expect_status 404
sm_stop
cd "$TEST_DIR"

# kill -9 during a large checkpoint: afterwards there is either no checkpoint or a whole one,
# never a partial one (the copy can finish between our look and the kill: both are fine).
sm_start -- sleep 1000
for i in $(seq 1 40); do head -c 5000000 /dev/urandom >"data/env/big-$i"; done
curl -s -o /dev/null -X POST "$SM_URL/checkpoint" -d '{"id": "killed"}' &
STARTED_PIDS+=($!)
# Copying, or (on a fast disk, between two looks) already done.
copying_or_done() {
  [[ -d tmp/checkpoints/killed ]] ||
    curl -s "$SM_URL/" | python3 -c 'import json,sys; o=json.load(sys.stdin)["operation"]; sys.exit(0 if o and o["step"] == "snapshot" and o["done_bytes"] > 0 else 1)'
}
wait_until "the big checkpoint copying" copying_or_done
kill -KILL "$SM_PID"
wait_exit "$SM_PID" || fail "state-manager did not die"
# COMMAND (if the checkpoint had restarted it) outlives a state-manager killed with SIGKILL:
# ours to stop, found by its output, which is that instance's log.
for out in /proc/[0-9]*/fd/1; do
  if [[ $(readlink "$out" 2>/dev/null) == "$SM_LOG" ]]; then
    orphan=${out#/proc/}
    STARTED_PIDS+=("${orphan%%/*}")
  fi
done
sm_start -- sleep 1000
[[ ! -e tmp/checkpoints/killed.partial ]] || fail "a partial checkpoint survived the restart"
req GET /checkpoints/killed
if [[ $STATUS == 200 ]]; then
  expect_json 'j["mount"]["files"] >= 40'
  for i in $(seq 1 40); do
    cmp "data/env/big-$i" "tmp/checkpoints/killed/mount/big-$i" || fail "the whole checkpoint is not whole"
  done
  log "the checkpoint had finished before the kill"
else
  expect_status 404
  [[ ! -e tmp/checkpoints/killed ]] || fail "a directory without a manifest was left"
fi
rm -f data/env/big-*
sm_stop

# A restore cut short (as by kill -9 in the middle of the swap, before its journal's commit): at
# the next start, what it had moved aside is put back. (crash_sweep_test.sh kills it for real
# at every step.)
printf '{"id": "test2", "env_dir": "data/env", "components": ["database"]}\n' >data/restore-journal
mkdir -p data/.restore-aside
mv data/database.sqlite data/.restore-aside/database.sqlite
mv data/env data/env.restore-aside
mkdir -p data/env
echo "half restored" >data/env/test.txt
sqlite3 data/database.sqlite "CREATE TABLE half(x)" # a half-restored database
sm_start -- sleep 1000
[[ $(cat data/env/test.txt) == "current" ]] || fail "the environment directory was not put back"
[[ ! -e data/.restore-aside && ! -e data/env.restore-aside ]] || fail "the aside copies remain"
[[ ! -e data/restore-journal ]] || fail "the journal remains"
[[ $(sqlite3 data/database.sqlite "SELECT count(*) FROM t") == 2 ]] || fail "the database was not put back"
grep -q "cut short before its commit was rolled back" "$SM_LOG" || fail "no log line for the undone restore"
sm_stop

# A COMMAND that ignores SIGTERM: killed at the stop timeout, and the checkpoint goes on.
mkdir -p "$TEST_DIR/stubborn/data/env"
cd "$TEST_DIR/stubborn"
echo "kept" >data/env/file
sm_start --timeout-stop 1s -- sh -c 'trap "" TERM; while :; do sleep 0.1; done'
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\", \"key_prefix\": \"stubborn/\"},
  \"stacks\": []}"
expect_status 200
req GET /
pid_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
req POST /checkpoint -d '{"id": "stubborn"}'
expect_status 200
expect_json 'j["manifest"]["steps_ms"]["quiesce"] >= 900'
[[ $(cat tmp/checkpoints/stubborn/mount/file) == kept ]] || fail "the checkpoint of a stubborn COMMAND"
grep -q 'killed by SIGKILL' "$SM_LOG" || fail "no SIGKILL logged for the COMMAND that ignored SIGTERM"
wait_until "COMMAND running again" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; p=json.load(sys.stdin)[\"process\"]; sys.exit(0 if p[\"state\"] == \"running\" and p[\"pid\"] not in (None, $pid_before) else 1)'"
sm_stop
cd "$TEST_DIR"
log "ok"
