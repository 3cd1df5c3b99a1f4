#!/usr/bin/env bash
# Secrets stay secret (DESIGN 3.2): the API token and the store's keys, given literally or through
# {"$env": "NAME"}, appear nowhere a process or a reader of the store can see them:
# /proc/<pid>/environ of state-manager, of COMMAND and of a declared component, the objects in
# the store (a checkpoint's copy of the configuration included), the logs, GET /config.
# A restore keeps the real secrets in tmp/config.json, and a restart resolves {"$env": ...} again.
source "$(dirname "$0")/harness.sh"

TOKEN=tok-3f9a71c0e2d4b6a8
ENV_ACCESS=AKIA-ENV-ACCESS-7d1c59e2   # given through {"$env": "SM_TEST_ACCESS_KEY"}
ENV_SECRET=env-secret-key-0b8e6a4f91  # given through {"$env": "SM_TEST_SECRET_KEY"}
LIT_ACCESS=AKIA-LITERAL-ACCESS-5e2c   # given literally in the document
LIT_SECRET=literal-secret-key-c4d7e19a
SECRETS=("$TOKEN" "$ENV_ACCESS" "$ENV_SECRET" "$LIT_ACCESS" "$LIT_SECRET")
auth=(-H "Authorization: Bearer $TOKEN")
store=$TEST_DIR/objects/env-bucket

# config PREFIX ACCESS_JSON SECRET_JSON: a database, and a component that only sleeps.
config() {
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects", "key_prefix": "%s/",
    "access_key": %s, "secret_key": %s},
  "components": {"worker": {"command": ["sleep", "1000"], "env": {"WORKER_MODE": "on"}}},
  "stacks": ["database", "worker"]}' "$TEST_DIR" "$1" "$2" "$3"
}

# no_secret_in WHAT FILE...: none of the secrets (nor the token) is in any of the files.
no_secret_in() {
  local what=$1 secret
  shift
  for secret in "${SECRETS[@]}"; do
    if grep -rqaF -- "$secret" "$@"; then
      fail "$what holds the secret \"$secret\": $(grep -rlaF -- "$secret" "$@" | head -5 | tr '\n' ' ')"
    fi
  done
}

# environ_of PID OUT: the environment the kernel shows for PID, one entry a line.
environ_of() {
  tr '\0' '\n' <"/proc/$1/environ" >"$2" || fail "cannot read /proc/$1/environ"
}

pid_of() {  # pid_of PYTHON_PATH_IN_GET_/
  req GET / "${auth[@]}"
  expect_status 200
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$1)" "$BODY_FILE"
}
# running WHICH: COMMAND ("process") or the worker is running, and COMMAND's dump of its own
# environment (written at its start to command-env.<pid>) is complete.
running() {
  req GET / "${auth[@]}"
  python3 - "$BODY_FILE" "$1" <<'EOF'
import json, os, sys
j = json.load(open(sys.argv[1]))
p = j["process"] if sys.argv[2] == "process" else j["components"]["worker"]
ok = p["state"] == "running" and isinstance(p.get("pid"), int)
if ok and sys.argv[2] == "process":
    # tr writes the dump, then sh execs sleep: complete once that pid runs sleep.
    try:
        ok = os.path.exists("command-env.%d" % p["pid"]) and \
            open("/proc/%d/cmdline" % p["pid"], "rb").read().startswith(b"sleep")
    except OSError:
        ok = False
sys.exit(0 if ok else 1)
EOF
}
lease_held() {
  req GET / "${auth[@]}"
  python3 -c 'import json,sys; sys.exit(0 if (json.load(open(sys.argv[1]))["lease"] or {}).get("held") else 1)' "$BODY_FILE"
}

# The processes under state-manager: the live ones, as GET / names them.
check_processes() {  # check_processes LABEL
  local label=$1 command_pid worker_pid
  environ_of "$SM_PID" "$TEST_DIR/environ-sm"
  no_secret_in "$label: /proc/<state-manager>/environ" "$TEST_DIR/environ-sm"
  # What the environment still holds that is no secret is left as it was.
  grep -qx "SM_TEST_PLAIN=kept" "$TEST_DIR/environ-sm" ||
    fail "$label: state-manager's environment lost an ordinary variable"
  command_pid=$(pid_of '["process"]["pid"]')
  worker_pid=$(pid_of '["components"]["worker"]["pid"]')
  [[ $command_pid =~ ^[0-9]+$ && $worker_pid =~ ^[0-9]+$ ]] ||
    fail "$label: no pids for COMMAND ($command_pid) and worker ($worker_pid)"
  environ_of "$command_pid" "$TEST_DIR/environ-command"
  environ_of "$worker_pid" "$TEST_DIR/environ-worker"
  no_secret_in "$label: COMMAND's environment" "$TEST_DIR/environ-command"
  no_secret_in "$label: the component's environment" "$TEST_DIR/environ-worker"
  grep -qx "SM_TEST_PLAIN=kept" "$TEST_DIR/environ-command" ||
    fail "$label: COMMAND lost an ordinary variable"
  grep -qx "WORKER_MODE=on" "$TEST_DIR/environ-worker" ||
    fail "$label: the component lost its own env"
  # COMMAND dumps its own view too: what it sees from the inside.
  [[ -s command-env.$command_pid ]] || fail "$label: COMMAND wrote no dump of its environment"
  no_secret_in "$label: COMMAND's own dump of its environment" "command-env.$command_pid"
}

upload_done() {  # upload_done ID
  [[ $(curl -s "${auth[@]}" "$SM_URL/checkpoints/$1" |
    python3 -c 'import json,sys; u=json.load(sys.stdin).get("upload") or {}; print(u.get("state"))') == done ]]
}

# One machine: keys given in a mix of both forms, a checkpoint uploaded, a restore, a restart.
machine() {  # machine DIR ACCESS_JSON SECRET_JSON NAME=VALUE (the variable $env names)
  local dir=$1 access=$2 secret=$3 variable=$4
  mkdir -p "$TEST_DIR/$dir/data/env"
  cd "$TEST_DIR/$dir"
  echo "some state" >data/env/file
  export STATE_MANAGER_TOKEN=$TOKEN "$variable" SM_TEST_PLAIN=kept
  # COMMAND writes what it sees of its own environment, then sleeps.
  sm_start -- sh -c 'tr "\0" "\n" </proc/$$/environ >command-env.$$; exec sleep 1000'
  unset STATE_MANAGER_TOKEN
  req POST /config "${auth[@]}" -d "$(config "$dir" "$access" "$secret")"
  expect_status 200
  # COMMAND starts again once the configuration is applied (what it saw before, the
  # environment as the container gave it, nobody could know to be secret yet), and again after
  # the checkpoint's quiesce (mode stop): the one running then is checked.
  req POST /checkpoint "${auth[@]}" -d '{"id": "s1"}'
  expect_status 200
  wait_until "the upload of s1" upload_done s1
  wait_until "COMMAND running again" running process
  wait_until "the worker running again" running worker
  check_processes "$dir"

  req GET /config "${auth[@]}"
  expect_status 200
  no_secret_in "$dir: GET /config" "$BODY_FILE"
  req GET / "${auth[@]}"
  no_secret_in "$dir: GET /" "$BODY_FILE"
  [[ -e $store/$dir/checkpoints/s1/manifest.json ]] || fail "$dir: the checkpoint is not in the store"
  # The store's objects are named by content (files/<sha256>): the index says which is the
  # configuration.
  python3 - "$store/$dir/checkpoints/s1" <<'EOF' || fail "$dir: the checkpoint's configuration in the store is not the redacted one"
import glob, json, os, sys
root = sys.argv[1]
index = json.load(open(glob.glob(os.path.join(root, "index-*.json"))[0]))
entry = next(e for e in index if e.get("path") == "config.json")
c = json.load(open(os.path.join(root, "files", entry["sha256"])))
assert c["storage"]["access_key"] == "***" and c["storage"]["secret_key"] == "***", c["storage"]
assert c["components"]["worker"]["command"] == ["sleep", "1000"], c
EOF
  no_secret_in "$dir: the local checkpoint" tmp/checkpoints
  no_secret_in "$dir: the store" "$TEST_DIR/objects"

  # A restore from the checkpoint keeps the real secrets: the configuration on disk is the one
  # applied, and a restart with it reaches the store again.
  cp tmp/config.json "$TEST_DIR/config-before-restore"
  req POST /restore "${auth[@]}" -d '{"id": "s1"}'
  expect_status 200
  cmp -s tmp/config.json "$TEST_DIR/config-before-restore" ||
    fail "$dir: the restore changed tmp/config.json: $(cat tmp/config.json)"
  sm_stop
  ((SM_EXIT == 0)) || fail "$dir: exited $SM_EXIT"

  # A restart resolves {"$env": ...} from the environment again: the same secrets, kept out of
  # the children again.
  export STATE_MANAGER_TOKEN=$TOKEN
  sm_start -- sh -c 'tr "\0" "\n" </proc/$$/environ >command-env.$$; exec sleep 1000'
  unset STATE_MANAGER_TOKEN
  wait_until "the lease after the restart" lease_held
  wait_until "the restarted COMMAND" running process
  wait_until "the restarted worker" running worker
  check_processes "$dir (restarted)"
  req POST /checkpoint "${auth[@]}" -d '{"id": "s2"}'
  expect_status 200
  wait_until "the upload of s2" upload_done s2
  no_secret_in "$dir: the store after the restart" "$TEST_DIR/objects"
  sm_stop
  ((SM_EXIT == 0)) || fail "$dir: exited $SM_EXIT after the restart"
  no_secret_in "$dir: the logs" "$LOG_DIR"
  unset "${variable%%=*}" SM_TEST_PLAIN
  cd "$TEST_DIR"
}

# The access key from the environment, the secret key literal; then the other way round (a
# second prefix of the same bucket, so that both machines' objects are grepped).
machine one '{"$env": "SM_TEST_ACCESS_KEY"}' "\"$LIT_SECRET\"" "SM_TEST_ACCESS_KEY=$ENV_ACCESS"
machine two "\"$LIT_ACCESS\"" '{"$env": "SM_TEST_SECRET_KEY"}' "SM_TEST_SECRET_KEY=$ENV_SECRET"
log "ok"
