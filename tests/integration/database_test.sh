#!/usr/bin/env bash
# The database component (issue 5), black-box: state-manager instances in their own
# directories, the application played by the sqlite3 shell (another process), the store read
# back with `state-manager restore-db`. Writes arrive in the store; kill -9, delete data/, and a
# fresh instance elsewhere restores every transaction that had reached the store; a foreign
# checkpoint loses nothing; point-in-time restore; release-lease flushes; a file that is not a
# database is a clear error. Then against Swift behind a relay: the store goes away while the
# application writes, and everything is shipped once it is back.
source "$(dirname "$0")/harness.sh"

command -v sqlite3 >/dev/null || fail "sqlite3 is needed (tools/install-deps --test installs it)"

OBJECTS=$TEST_DIR/objects

db_config() {  # ENDPOINT [EXTRA STORAGE JSON]
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "%s", "key_prefix": "envs/7/"%s},
    "stacks": ["database"], "database": {"sync_interval": "100ms"}}\n' "$1" "${2:-}"
}

database_json() {  # NAME PY_EXPR: about GET / components.database, as `d`
  on "$1" GET /
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["components"]["database"]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$BODY_FILE" "$2"
}
sql() {  # NAME SQL: the application's write (or read), in its own sqlite3 process
  sqlite3 -cmd ".timeout 10000" "$TEST_DIR/$1/data/database.sqlite" "$2"
}
# restored_rows CONFIG [restore-db ARGS...]: restores into a new file, prints count(*) of t;
# returns 1 (saying why on stderr) if restore-db fails or the result is not sound.
restored_rows() {
  local config=$1
  shift
  # A new file each time (this runs in command substitutions: no counter survives them).
  local to
  to=$(mktemp -u "$TEST_DIR/restored-XXXXXX.db")
  run_cli restore-db --config "$config" --to "$to" "$@"
  if ((CLI_EXIT != 0)); then
    echo "restore-db exited $CLI_EXIT: $(cat "$CLI_ERR")" >&2
    return 1
  fi
  if [[ $(sqlite3 "$to" "PRAGMA integrity_check") != ok ]]; then
    echo "restored database fails integrity_check" >&2
    return 1
  fi
  sqlite3 "$to" "SELECT count(*) FROM t" 2>/dev/null || echo 0
}
rows_in_store() {  # CONFIG N: the store has (at least) N rows of t
  local n
  n=$(restored_rows "$1" 2>/dev/null) || return 1
  ((n >= $2))
}

# --- Initialisation: the seed's verification steps, literally, in the instance's directory.
start a --lease-ttl 3s
curl -sN --max-time 60 "$a_URL/events" >"$TEST_DIR/events-a" &
EVENTS_PID=$!
STARTED_PIDS+=("$EVENTS_PID")
wait_until "the event stream" test -e "$TEST_DIR/events-a"
on a POST /config -d "$(db_config "file://$OBJECTS")"
expect_status 200
expect_json 'j["components"]["database"]["state"] == "running"'
wait_until "the database's events" grep -q '"name":"database","new":"running"' "$TEST_DIR/events-a"
grep -q '"name":"database","new":"starting"' "$TEST_DIR/events-a" || fail "no starting event: $(cat "$TEST_DIR/events-a")"
kill "$EVENTS_PID"
cd "$TEST_DIR/a"
ls -l data/database.sqlite >/dev/null || fail "data/database.sqlite was not created"
ls -l data/database.sqlite-litestream >/dev/null || fail "data/database.sqlite-litestream is missing"
[[ $(sqlite3 data/database.sqlite "SELECT 1;") == 1 ]] || fail "sqlite3 cannot read the database"
[[ $(sqlite3 data/database.sqlite "PRAGMA journal_mode;") == wal ]] || fail "not in WAL mode"
[[ $(sqlite3 data/database.sqlite "SELECT value FROM state_manager_meta WHERE key='schema_version'") == 1 ]] ||
  fail "state_manager_meta has no schema_version"
cd "$TEST_DIR"
database_json a 'd["state"] == "running" and len(d["replication"]["generation"]) == 32' ||
  fail "components.database is not running with a generation: $BODY"
expect_json 'j["state"] == "running"'
A_CONFIG=$TEST_DIR/a/tmp/config.json

# --- Writes by another process reach the store, one transaction at a time.
sql a "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
for i in $(seq 1 50); do sql a "INSERT INTO t(v) VALUES ('row $i')"; done
wait_until "50 rows in the store" rows_in_store "$A_CONFIG" 50
database_json a 'd["replication"]["last_error"] is None and d["replication"]["last_sync_at"]' ||
  fail "replication status after writes: $BODY"
wait_until "an empty backlog" database_json a 'd["replication"]["backlog_bytes"] == 0'
on a GET /metrics
grep -q '^state_manager_database_state{state="running"} 1$' "$BODY_FILE" || fail "metrics: $BODY"
grep -q '^state_manager_database_replication_backlog_bytes 0$' "$BODY_FILE" || fail "metrics: $BODY"

# --- A foreign TRUNCATE checkpoint (the application's own) loses nothing.
sql a "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
for i in $(seq 51 60); do sql a "INSERT INTO t(v) VALUES ('row $i')"; done
wait_until "60 rows in the store after a foreign checkpoint" rows_in_store "$A_CONFIG" 60

# --- Point in time: a restore at T has the rows committed before T and none after.
wait_until "an empty backlog" database_json a 'd["replication"]["backlog_bytes"] == 0'
sleep 1.1 # the store's Last-Modified has a resolution; T lies clearly between the batches
T=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.1
for i in $(seq 61 70); do sql a "INSERT INTO t(v) VALUES ('row $i')"; done
wait_until "70 rows in the store" rows_in_store "$A_CONFIG" 70
n=$(restored_rows "$A_CONFIG" --at "$T") || fail "restore-db --at failed"
((n == 60)) || fail "restore-db --at $T restored $n rows, expected 60"
run_cli restore-db --config "$A_CONFIG" --to "$TEST_DIR/summary.db" --at "$T"
grep -q "^restored .*summary.db from generation [0-9a-f]\{32\}" "$CLI_OUT" ||
  fail "restore-db's summary: $(cat "$CLI_OUT")"

# --- A foreign checkpoint while state-manager is down resets the WAL behind the shadow: the
# restart notices, starts a new generation, and loses nothing.
database_json a 'True'
generation_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["database"]["replication"]["generation"])' "$BODY_FILE")
kill -KILL "$a_PID"
wait_exit "$a_PID" || fail "a did not die"
[[ $(sql a "PRAGMA wal_checkpoint(TRUNCATE)") == 0\|* ]] || fail "the foreign checkpoint did not run"
sql a "INSERT INTO t(v) VALUES ('while down')"
start a --lease-ttl 3s
wait_until "a's database running again" database_json a 'd["state"] == "running"'
database_json a "d['replication']['generation'] != '$generation_before'" ||
  fail "no new generation after a foreign checkpoint: $BODY"
wait_until "71 rows in the store after the new generation" rows_in_store "$A_CONFIG" 71
# A restart with nothing foreign in between continues the generation instead.
database_json a 'True'
generation_before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["database"]["replication"]["generation"])' "$BODY_FILE")
sm_stop "$a_PID"
start a --lease-ttl 3s
wait_until "a's database running again" database_json a 'd["state"] == "running"'
database_json a "d['replication']['generation'] == '$generation_before'" ||
  fail "a clean restart began a new generation: $BODY"

# --- kill -9, data/ deleted, a fresh instance elsewhere: everything that reached the store.
for i in $(seq 72 81); do sql a "INSERT INTO t(v) VALUES ('row $i')"; done
wait_until "81 rows in the store" rows_in_store "$A_CONFIG" 81
sql a "INSERT INTO t(v) VALUES ('maybe lost')" # committed just before the kill: may be lost
kill -KILL "$a_PID"
wait_exit "$a_PID" || fail "a did not die"
rm -rf "$TEST_DIR/a/data"
# b has an old database of its own: taking the lease over from another owner means the store's
# state wins over it.
mkdir -p "$TEST_DIR/b/data"
sqlite3 "$TEST_DIR/b/data/database.sqlite" \
  "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('stale')" >/dev/null
start b --wait-for-lease
on b POST /config -d "$(db_config "file://$OBJECTS")"
expect_status 200
database_json b 'd["state"] == "running" and d["restored"] is not None' ||
  fail "b did not restore the database: $BODY"
n=$(sql b "SELECT count(*) FROM t")
((n >= 81)) || fail "b has $n rows after the restore, expected at least 81"
[[ $(sql b "PRAGMA integrity_check") == ok ]] || fail "b's database fails integrity_check"
[[ $(sql b "SELECT count(*) FROM t WHERE v = 'stale'") == 0 ]] || fail "b kept its stale database"
[[ $(sql b "SELECT v FROM t WHERE id = 81") == "row 81" ]] || fail "row 81 is wrong after the restore"
# Replication goes on from there (a new generation).
sql b "INSERT INTO t(v) VALUES ('after the restore')"
B_CONFIG=$TEST_DIR/b/tmp/config.json
wait_until "b's write in the store" rows_in_store "$B_CONFIG" $((n + 1))

# --- release-lease: the final sync is done before it answers.
sql b "INSERT INTO t(v) VALUES ('flushed by release-lease')"
on b POST /release-lease
expect_status 200
expect_json 'j["released"] and j["flushed"][0]["component"] == "database" and j["flushed"][0]["error"] is None'
database_json b 'd["state"] == "stopped"' || fail "database not stopped after release-lease: $BODY"
n=$(restored_rows "$B_CONFIG") || fail "restore after release-lease failed"
((n == $(sql b "SELECT count(*) FROM t"))) || fail "release-lease did not flush everything ($n rows in the store)"
sm_stop "$b_PID"

# --- A damaged segment in the store: the restore stops at the last verified transaction, says
# so, and what it restores is sound.
full=$n
last_segment=$(find "$OBJECTS" -name '*.wal.zst' | sort | tail -n1)
[[ -n $last_segment ]] || fail "no WAL segment in the store"
truncate -s $(($(stat -c %s "$last_segment") / 2)) "$last_segment"
run_cli restore-db --config "$B_CONFIG" --to "$TEST_DIR/damaged.db"
((CLI_EXIT == 0)) || fail "restore-db over a damaged segment exited $CLI_EXIT: $(cat "$CLI_ERR")"
grep -q "^warning: the replay stopped early" "$CLI_OUT" "$CLI_ERR" ||
  fail "restore-db did not say it stopped early: $(cat "$CLI_OUT" "$CLI_ERR")"
[[ $(sqlite3 "$TEST_DIR/damaged.db" "PRAGMA integrity_check") == ok ]] || fail "damaged restore fails integrity_check"
n=$(sqlite3 "$TEST_DIR/damaged.db" "SELECT count(*) FROM t")
((n < full && n >= 81)) || fail "restore over a damaged segment has $n rows (all: $full)"

# --- A file that is not a database: a clear error, the file untouched.
mkdir -p "$TEST_DIR/c/data"
printf 'this is not a database, it is a text file of some length %.0s' {1..20} >"$TEST_DIR/c/data/database.sqlite"
sum_before=$(md5sum <"$TEST_DIR/c/data/database.sqlite")
start c
on c POST /config -d "$(db_config "file://$TEST_DIR/objects-c")"
expect_status 200 # saved; the answer says what came of it
expect_json 'j["components"]["database"]["state"] == "failed" and j["state"] == "error"'
database_json c 'd["state"] == "failed" and "not a database" in d["last_error"]' ||
  fail "a non-database file: $BODY"
expect_json 'j["state"] in ("error", "degraded")'
[[ $(md5sum <"$TEST_DIR/c/data/database.sqlite") == "$sum_before" ]] || fail "the non-database file was changed"
sm_stop "$c_PID"

# --- restore-db's own errors.
run_cli restore-db --to "$TEST_DIR/x.db" --config "$TEST_DIR/no-such-config.json"
((CLI_EXIT == 1)) || fail "restore-db without a configuration exited $CLI_EXIT"
run_cli restore-db --config "$A_CONFIG"
((CLI_EXIT == 2)) || fail "restore-db without --to exited $CLI_EXIT"

# --- The store away (Swift behind a relay that is stopped, then started again).
s3_server_start
s3_make_bucket env-bucket
relay_start
creds=", \"access_key\": \"$S3_ACCESS_KEY\", \"secret_key\": \"$S3_SECRET_KEY\""
start d
on d POST /config -d "$(db_config "http://127.0.0.1:$relay_port" "$creds")"
expect_status 200
database_json d 'd["state"] == "running"' || fail "d: $BODY"
sql d "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
for i in $(seq 1 20); do sql d "INSERT INTO t(v) VALUES ('before $i')"; done
# Read back straight from Swift, not through the relay.
printf '%s\n' "$(db_config "$S3_ENDPOINT" "$creds")" >"$TEST_DIR/direct.json"
wait_until "20 rows in Swift" rows_in_store "$TEST_DIR/direct.json" 20
kill -KILL "$RELAY_PID"
wait_exit "$RELAY_PID" || fail "the relay did not stop"
for i in $(seq 1 200); do sql d "INSERT INTO t(v) VALUES ('during $i')"; done
wait_until "the outage in the status" database_json d \
  'd["state"] == "degraded" and d["replication"]["last_error"] and d["replication"]["backlog_bytes"] > 0'
on d GET /metrics
grep -q '^state_manager_database_replication_failing 1$' "$BODY_FILE" || fail "metrics during the outage"
relay_start
wait_until "the backlog shipped" database_json d \
  'd["state"] == "running" and d["replication"]["last_error"] is None and d["replication"]["backlog_bytes"] == 0'
n=$(restored_rows "$TEST_DIR/direct.json") || fail "restore after the outage failed"
((n == 220)) || fail "after the outage the store has $n rows, expected 220"
sm_stop "$d_PID"
((SM_EXIT == 0)) || fail "d exited $SM_EXIT"
log "ok"
