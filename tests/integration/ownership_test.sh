#!/usr/bin/env bash
# The ownership rules (one writer per prefix), black-box, with real instances on one file://
# store:
#   - after POST /release-lease, and after a lost lease, the instance is fenced: checkpoint,
#     restore and delete answer 409 "lease not held", nothing starts again, nothing is written;
#   - a release answers 200 only when the whole state is in the store: a database whose final
#     sync fails, or a checkpoint the store refused, is a 503 naming it, the lease is kept and
#     everything runs again; once the store takes it, a later release succeeds and the next
#     owner sees every row and checkpoint;
#   - a checkpoint upload that failed is tried again while running;
#   - checkpoint ids are unique across the prefix: the next owner neither reuses nor overwrites
#     the previous owner's ids.
# The store is broken on purpose by putting a plain file where a key's directory goes
# (ENOTDIR: an error the store does not retry, so no test waits for retries to run out).
source "$(dirname "$0")/harness.sh"
command -v sqlite3 >/dev/null || fail "sqlite3 is needed (tools/install-deps --test installs it)"

OBJECTS=$TEST_DIR/objects

config() {  # KEY_PREFIX
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s", "key_prefix": "%s",
    "env_dir": "%s"}, "stacks": ["database"], "database": {"sync_interval": "100ms"}}\n' \
    "$OBJECTS" "$1" "$TEST_DIR/env-$1"
}
prefix_dir() { printf '%s/env-bucket/%s' "$OBJECTS" "$1"; }

json_of() {
  python3 -c 'import json, sys; j = json.load(open(sys.argv[2])); print(eval(sys.argv[1]))' "$1" "$BODY_FILE"
}
sql() { sqlite3 -cmd ".timeout 10000" "$TEST_DIR/$1/data/database.sqlite" "$2"; }

# Every object under a prefix with its size and mtime: unchanged means nothing was written.
store_listing() { (cd "$(prefix_dir "$1")" && find . -printf '%p %s %T@\n' | sort); }

upload_state() {  # NAME ID
  on "$1" GET "/checkpoints/$2"
  json_of 'j["upload"]["state"] if j.get("upload") else None'
}
upload_is() {  # NAME ID STATE
  [[ $(upload_state "$1" "$2") == "$3" ]]
}
component_state() {  # NAME COMPONENT
  on "$1" GET /
  json_of "j['components']['$2']['state']"
}
component_is() { [[ $(component_state "$1" "$2") == "$3" ]]; }
database_up() { [[ $(component_state "$1" database) =~ ^(running|degraded)$ ]]; }
db_healthy() { [[ $(component_state "$1" database) == running ]]; }
starts() { wc -l <"$TEST_DIR/$1/starts" 2>/dev/null || echo 0; }

# COMMAND notes each of its starts, so that a restart shows.
COMMAND=(sh -c 'echo started >>starts; exec sleep 100000')

# --- A releases: fenced from then on ---------------------------------------------------------
P=fence-release/
mkdir -p "$TEST_DIR/env-$P"
start a -- "${COMMAND[@]}"
on a POST /config -d "$(config "$P")"
expect_status 200
wait_until "A's COMMAND" test "$(starts a)" -ge 1
sql a "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('one');"
echo first >"$TEST_DIR/env-$P/file"
on a POST /checkpoint -d '{"id": "v1"}'
expect_status 200
wait_until "v1 in the store" upload_is a v1 done
on a POST /release-lease
expect_status 200
expect_json 'j["released"] is True and j["lease"]["held"] is False'
before=$(store_listing "$P")
starts_before=$(starts a)

on a POST /checkpoint -d '{}'
expect_status 409
expect_json 'j["error"] == "lease not held" and "released" in j["reason"]'
on a POST /checkpoint -d '{"id": "after-release"}'
expect_status 409
on a POST /restore -d '{"id": "v1"}'
expect_status 409
expect_json 'j["error"] == "lease not held"'
on a DELETE /checkpoints/v1
expect_status 409
expect_json 'j["error"] == "lease not held"'
[[ -d a/tmp/checkpoints/v1 ]] || fail "a fenced DELETE removed the local checkpoint"
on a GET /
expect_json 'j["process"]["state"] == "stopped" and j["components"]["database"]["state"] == "stopped"'
expect_json '"released" in j["fenced"]'
[[ $(starts a) == "$starts_before" ]] || fail "COMMAND started again after the release"
[[ ! -e a/tmp/checkpoints/after-release ]] || fail "a checkpoint was made after the release"
# A second release changes nothing either.
on a POST /release-lease
expect_status 200
expect_json 'j["released"] is False'
[[ $(store_listing "$P") == "$before" ]] ||
  fail "the store changed after the release: $(diff <(echo "$before") <(store_listing "$P"))"

# --- B takes over the prefix: the ids are unique across it ------------------------------------
start b
on b POST /config -d "$(config "$P")"
expect_status 200
[[ $(sql b "SELECT group_concat(v) FROM t") == one ]] || fail "B does not have A's row"
on b GET /checkpoints
expect_json '[(c["id"], c["location"]) for c in j["checkpoints"]] == [("v1", "store")]'
on b POST /checkpoint -d '{"id": "v1"}'
expect_status 409
expect_json 'j["id"] == "v1"'
on b POST /checkpoint -d '{}'
expect_status 200
expect_json 'j["id"] == "v2"'
wait_until "v2 in the store" upload_is b v2 done
# A's v1 in the store is A's still (its manifest untouched).
grep -q '"id": *"v1"' "$(prefix_dir "$P")checkpoints/v1/manifest.json" ||
  fail "v1's manifest changed: $(cat "$(prefix_dir "$P")checkpoints/v1/manifest.json")"
sm_stop "$b_PID"
sm_stop "$a_PID"

# --- C loses its lease to an intruder: fenced the same way ------------------------------------
P=fence-lost/
mkdir -p "$TEST_DIR/env-$P"
start c --lease-ttl 2s -- "${COMMAND[@]}"
on c POST /config -d "$(config "$P")"
expect_status 200
on c POST /checkpoint -d '{"id": "v1"}'
expect_status 200
wait_until "v1 in the store" upload_is c v1 done
python3 - "$(prefix_dir "$P")lease.json" <<'EOF'
import json, os, sys, time
now = int(time.time() * 1000)
record = {"owner": "intruder", "acquired_at_ms": now, "expires_at_ms": now + 3600 * 1000, "counter": 1000}
with open(sys.argv[1] + ".intruder", "w") as f:
    json.dump(record, f)
os.replace(sys.argv[1] + ".intruder", sys.argv[1])
EOF
lost() {
  on c GET /
  [[ $(json_of 'j["lease"]["held"]') == False ]]
}
wait_until "C to notice that its lease was taken" lost
wait_until "C's database to stop" component_is c database stopped
before=$(store_listing "$P")
starts_before=$(starts c)
on c POST /checkpoint -d '{}'
expect_status 409
expect_json 'j["error"] == "lease not held" and "lost" in j["reason"]'
on c POST /restore -d '{"id": "v1"}'
expect_status 409
on c DELETE /checkpoints/v1
expect_status 409
[[ $(component_state c database) == stopped ]] || fail "the database started again after the loss"
[[ $(starts c) == "$starts_before" ]] || fail "COMMAND started again after the loss"
[[ $(store_listing "$P") == "$before" ]] ||
  fail "the store changed after the loss: $(diff <(echo "$before") <(store_listing "$P"))"
sm_stop "$c_PID"

# --- D cannot hand over: a 503 naming what is missing, the lease kept, a later release -------
P=incomplete/
mkdir -p "$TEST_DIR/env-$P"
start d -- "${COMMAND[@]}"
on d POST /config -d "$(config "$P")"
expect_status 200
sql d "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('before');"
wait_until "D's database to replicate" db_healthy d
wait_until "D's COMMAND" test "$(starts d)" -ge 1
# The store refuses the database's segments and the checkpoints from now on.
DB_KEYS=$(prefix_dir "$P")db
mv "$DB_KEYS" "$DB_KEYS.aside"
touch "$DB_KEYS" "$(prefix_dir "$P")checkpoints"
sql d "INSERT INTO t VALUES ('during');"
on d POST /checkpoint -d '{"id": "c1"}'
expect_status 200
wait_until "c1's upload to fail" upload_is d c1 failed
starts_before=$(starts d)
on d POST /release-lease
expect_status 503
expect_json 'j["released"] is False and j["lease"]["held"] is True'
expect_json '"database" in [m["part"] for m in j["missing"]]'
expect_json '[m.get("id") for m in j["missing"] if m["part"] == "checkpoint"] == ["c1"]'
# Everything runs again, under the lease it kept.
wait_until "D's database to run again" database_up d
wait_until "D's COMMAND to run again" test "$(starts d)" -gt "$starts_before"
on d GET /
expect_json 'j["lease"]["held"] is True and j["fenced"] is None'
# The store takes writes again: the failed upload is retried while running (no restart, no
# request), and the database catches up.
rm "$DB_KEYS" "$(prefix_dir "$P")checkpoints"
mv "$DB_KEYS.aside" "$DB_KEYS"
wait_until "c1's upload to be retried" upload_is d c1 done
wait_until "D's database to replicate again" db_healthy d
on d POST /release-lease
expect_status 200
expect_json 'j["released"] is True'
# The next owner has every row committed before the release, and the checkpoint.
start e
on e POST /config -d "$(config "$P")"
expect_status 200
[[ $(sql e "SELECT group_concat(v) FROM t") == "before,during" ]] ||
  fail "E's database: $(sql e "SELECT group_concat(v) FROM t")"
on e GET /checkpoints/c1
expect_status 200
expect_json 'j["location"] == "store"'
sm_stop "$e_PID"
sm_stop "$d_PID"

# --- F releases while an upload the store refuses is still under way: 503, not a wait ---------
# (the failing upload armed its retry while the release waited for the uploads, whose gate the
# retry held: the release never answered, with everything stopped).
P=in-flight/
mkdir -p "$TEST_DIR/env-$P"
truncate -s 1G "$TEST_DIR/env-$P/big"  # sparse: quick to copy, seconds to hash for the upload
start f -- "${COMMAND[@]}"
on f POST /config -d "$(config "$P")"
expect_status 200
wait_until "F's database to replicate" db_healthy f
touch "$(prefix_dir "$P")checkpoints"
on f POST /checkpoint -d '{"id": "c1"}'
expect_status 200
on f POST /release-lease
expect_status 503
expect_json '[m.get("id") for m in j["missing"] if m["part"] == "checkpoint"] == ["c1"]'
expect_json 'j["lease"]["held"] is True'
wait_until "F's database to run again" database_up f
sm_stop "$f_PID"

# --- G boots with a saved configuration and waits for H's lease; released, it stops claiming --
# (it went on claiming, took the lease once H let go, and kept it while fenced).
P=claiming/
mkdir -p "$TEST_DIR/env-$P" "$TEST_DIR/g/tmp"
start h
on h POST /config -d "$(config "$P")"
expect_status 200
config "$P" >"$TEST_DIR/g/tmp/config.json"
start g --wait-for-lease
wait_until "G waiting for the lease" grep -q 'waiting for the lease' "$g_LOG"
on g POST /release-lease
expect_status 200
expect_json 'j["released"] is False'
wait_until "G to stop claiming" grep -q 'no longer claiming' "$g_LOG"
sm_stop "$h_PID"
start i
on i POST /config -d "$(config "$P")"
expect_status 200
on g GET /
expect_json 'j["lease"] is None or j["lease"]["held"] is False'
sm_stop "$i_PID"
sm_stop "$g_PID"

# --- J is asked to release while its components are starting: 409, and nothing runs on -------
# (the release answered 200 while POST /config went on starting the rest, COMMAND included,
# after the lease was gone). A component not ready until the test says so holds the start.
P=starting/
mkdir -p "$TEST_DIR/env-$P"
start j -- "${COMMAND[@]}"
printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s", "key_prefix": "%s",
  "env_dir": "%s"}, "stacks": ["slow"], "components": {"slow": {"command": ["sleep", "100000"],
  "ready_command": ["test", "-e", "%s"], "ready_timeout": "60s"}}}\n' \
  "$OBJECTS" "$P" "$TEST_DIR/env-$P" "$TEST_DIR/j-go" >"$TEST_DIR/j-config.json"
curl -s -o "$TEST_DIR/j-config-answer" -w '%{http_code}' -X POST --data-binary "@$TEST_DIR/j-config.json" \
  "$j_URL/config" >"$TEST_DIR/j-config-status" &
CONFIG_PID=$!
STARTED_PIDS+=("$CONFIG_PID")
wait_until "J's component starting" component_is j slow starting
on j POST /release-lease
expect_status 409
expect_json '"starting" in j["error"]'
touch "$TEST_DIR/j-go"
wait "$CONFIG_PID" || true
[[ $(cat "$TEST_DIR/j-config-status") == 200 ]] || fail "J's POST /config: $(cat "$TEST_DIR/j-config-status")"
on j GET /
expect_json 'j["lease"]["held"] is True and j["fenced"] is None and j["state"] == "running"'
# Up now: the release goes through, and everything stops.
on j POST /release-lease
expect_status 200
expect_json 'j["released"] is True'
on j GET /
expect_json 'j["process"]["state"] == "stopped" and j["components"]["slow"]["state"] == "stopped"'
sm_stop "$j_PID"
log "passed"
