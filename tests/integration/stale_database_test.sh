#!/usr/bin/env bash
# A stale local database is detected by comparing it with the store, not by the lease's history
# (DESIGN 3.2): machine a's database falls behind while b owns the environment; when a comes back
# and lease.json no longer says who held it (removed from the store), a still restores b's
# newer state instead of going on with its own. A restart with nothing newer in the store keeps
# the local database.
source "$(dirname "$0")/harness.sh"

command -v sqlite3 >/dev/null || fail "sqlite3 is needed (tools/install-deps --test installs it)"
OBJECTS=$TEST_DIR/objects
config() {
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s", "key_prefix": "envs/9/"},
    "stacks": ["database"], "database": {"sync_interval": "100ms"}}\n' "$OBJECTS"
}
sql() {  # NAME SQL
  sqlite3 -cmd ".timeout 10000" "$TEST_DIR/$1/data/database.sqlite" "$2"
}
database_json() {  # NAME PY_EXPR: about GET / components.database, as `d`
  on "$1" GET /
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["components"]["database"]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$BODY_FILE" "$2"
}

# --- a: the first owner, 3 rows; its shut-down syncs them and frees the lease.
start a
on a POST /config -d "$(config)"
expect_status 200
wait_until "a's database" database_json a 'd["state"] == "running"'
sql a "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
for i in 1 2 3; do sql a "INSERT INTO t(v) VALUES ('a $i')"; done
sm_stop "$a_PID"
((SM_EXIT == 0)) || fail "a exited $SM_EXIT"

# --- A restart of a with nothing newer in the store keeps its own database.
start a
wait_until "a's database again" database_json a 'd["state"] == "running"'
database_json a 'd["restored"] is None' || fail "a restored although the store had nothing newer: $BODY"
sm_stop "$a_PID"

# --- b takes over, restores a's rows, adds its own; its shut-down syncs them.
start b
on b POST /config -d "$(config)"
expect_status 200
wait_until "b's database" database_json b 'd["state"] == "running"'
database_json b 'd["restored"] is not None' || fail "b did not restore a's database: $BODY"
for i in 4 5; do sql b "INSERT INTO t(v) VALUES ('b $i')"; done
sm_stop "$b_PID"
((SM_EXIT == 0)) || fail "b exited $SM_EXIT"

# --- lease.json is gone (a store that lost it, an operator's clean-up): its history says
# nothing now. a's database (3 rows) is older than the store's (5 rows): a restores.
lease=$OBJECTS/env-bucket/envs/9/lease.json
[[ -e $lease ]] || fail "no lease.json at $lease"
rm "$lease"
[[ $(sql a "SELECT count(*) FROM t") == 3 ]] || fail "a's local database should hold 3 rows"
start a
wait_until "a's database after b" database_json a 'd["state"] == "running"'
database_json a 'd["restored"] is not None' ||
  fail "a kept its stale database (the store has b's newer generation): $BODY"
n=$(sql a "SELECT count(*) FROM t")
((n == 5)) || fail "a has $n rows after coming back, expected b's 5"
[[ $(sql a "SELECT v FROM t WHERE id = 5") == "b 5" ]] || fail "row 5 is not b's"
log "ok"
