# Shared by every integration test: `source "$(dirname "$0")/harness.sh"`.
#
# Each test runs in its own temporary directory (the working directory of every state-manager it
# starts), and on exit, pass or fail, kills by PID whatever it started, prints the state-manager
# logs if it failed, and removes the directory. Waits poll with generous deadlines: a loaded
# machine makes a test slower, never red.
#
#   sm_start [ARGS...]   start "$STATE_MANAGER_BIN" --listen "$SM_LISTEN" ARGS... in the current
#                        directory; sets SM_PID, SM_PORT, SM_URL, SM_LOG
#   sm_stop [PID]        SIGTERM and wait; sets SM_EXIT
#   req METHOD PATH [CURL ARGS...]   sets STATUS, BODY, BODY_FILE, HEADERS (a file)
#   expect_status CODE, expect_json PY_EXPR, expect_header NAME VALUE_REGEX, fail MESSAGE
#   run_cli [ARGS...]    run the binary to completion; sets CLI_EXIT, CLI_OUT, CLI_ERR (files)
#   wait_until WHAT COMMAND...   poll COMMAND until it succeeds, or fail after DEADLINE
set -euo pipefail

: "${STATE_MANAGER_BIN:?STATE_MANAGER_BIN must name the state-manager binary}"
[[ -x $STATE_MANAGER_BIN ]] || { echo "FAIL: $STATE_MANAGER_BIN is not executable" >&2; exit 1; }

# Settings of the calling environment must not leak into the instances under test.
while read -r name; do
  [[ $name == STATE_MANAGER_BIN ]] || unset "$name"
done < <(compgen -e | grep '^STATE_MANAGER_' || true)

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEST_NAME=$(basename "$0" .sh)
TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sm-${TEST_NAME}.XXXXXX")
LOG_DIR=$TEST_DIR/logs
mkdir "$LOG_DIR"
cd "$TEST_DIR"

DEADLINE=20            # seconds: start-up, shut-down, any single wait
SM_LISTEN=127.0.0.1:0  # "" passes no --listen (to test STATE_MANAGER_LISTEN)
STARTED_PIDS=()
SM_INSTANCES=0

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }

fail() {
  printf 'FAIL [%s]: %s\n' "$TEST_NAME" "$*" >&2
  exit 1
}

# True while PID exists and is not a zombie (a zombie still answers kill -0).
pid_running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Waits up to $2 seconds (default $DEADLINE) for PID $1 to exit; false if it is still running.
wait_exit() {
  local pid=$1 end=$((SECONDS + ${2:-$DEADLINE}))
  while pid_running "$pid"; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

harness_cleanup() {
  local status=$1 pid
  set +e
  if [[ -n $S3_SERVER_DIR ]]; then
    "$S3_SERVER" stop "$S3_SERVER_DIR" || status=1
    ((status == 0)) || cp "$S3_SERVER_DIR"/log/*.log "$LOG_DIR/" 2>/dev/null
  fi
  for pid in "${STARTED_PIDS[@]}"; do
    pid_running "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${STARTED_PIDS[@]}"; do
    if ! wait_exit "$pid" 10; then
      log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  # The cgroups of checkpoint_mode "freeze" (state-manager-<pid>) of the instances we started:
  # what is left in them is ours (orphans of a killed instance), thawed, killed, then removed.
  local group member
  for pid in "${STARTED_PIDS[@]}"; do
    for group in /sys/fs/cgroup/unified/state-manager-"$pid" /sys/fs/cgroup/freezer/state-manager-"$pid"; do
      [[ -d $group ]] || continue
      echo 0 >"$group/cgroup.freeze" 2>/dev/null || echo THAWED >"$group/freezer.state" 2>/dev/null
      for member in $(cat "$group/cgroup.procs" 2>/dev/null); do kill -KILL "$member" 2>/dev/null; done
      local end=$((SECONDS + 10))
      until rmdir "$group" 2>/dev/null || ((SECONDS > end)); do sleep 0.05; done
    done
  done
  # A FUSE mount an instance we killed with SIGKILL left behind (its server gone): detached, so
  # that removing the directory does not trip over "Transport endpoint is not connected".
  local _dev mount_point _type _rest
  while read -r _dev mount_point _type _rest; do
    [[ $mount_point == "$TEST_DIR"/* && $_type == fuse.* ]] || continue
    umount -l "$mount_point" 2>/dev/null || status=1
  done < <(tac /proc/self/mounts)
  for mount_point in "${MOUNTED[@]}"; do
    umount "$mount_point" 2>/dev/null || umount -l "$mount_point" || status=1
  done
  if ((status != 0)); then
    local f
    for f in "$LOG_DIR"/*; do
      [[ -f $f ]] || continue
      printf '\n----- %s -----\n' "$(basename "$f")" >&2
      cat "$f" >&2
    done
    printf -- '----- end of logs (test dir %s) -----\n' "$TEST_DIR" >&2
  fi
  cd /
  rm -rf "$TEST_DIR"
  exit "$status"
}
MOUNTED=() # what a test mounted (mount_tmpfs), unmounted by the cleanup
trap 'harness_cleanup $?' EXIT

# mount_tmpfs DIR SIZE: a small file system of its own (to run out of space on purpose);
# returns 1 where mounting is not allowed, so that the test can say so and skip that part.
mount_tmpfs() {
  mkdir -p "$1"
  mount -t tmpfs -o "size=$2" tmpfs "$1" 2>/dev/null || return 1
  MOUNTED+=("$1")
}

# s3_server_start: a real, signature-checking S3 server for this test (Swift with s3api, from
# tools/s3-test-server), stopped by the cleanup; exports S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY
# and S3_SECRET_KEY. s3_make_bucket NAME creates a bucket on it (with boto3).
S3_SERVER=${S3_TEST_SERVER:-$HARNESS_DIR/../../tools/s3-test-server}
S3_SERVER_DIR=
s3_server_start() {
  S3_SERVER_DIR=$TEST_DIR/s3-server
  timeout -k 5 120 "$S3_SERVER" start "$S3_SERVER_DIR" >/dev/null ||
    fail "the S3 test server did not start (tools/s3-test-server; tools/install-deps --test installs Swift)"
  set -a
  # shellcheck disable=SC1091
  source "$S3_SERVER_DIR/env"
  set +a
}
s3_make_bucket() {
  /usr/bin/python3 - "$1" <<'PY' || fail "could not create bucket $1"
import os, sys, boto3, botocore.config
boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["S3_REGION"],
             aws_access_key_id=os.environ["S3_ACCESS_KEY"],
             aws_secret_access_key=os.environ["S3_SECRET_KEY"],
             config=botocore.config.Config(s3={"addressing_style": "path"})).create_bucket(Bucket=sys.argv[1])
PY
}

# relay_start: a TCP relay (tcp_relay.py) on $relay_port, picked at the first call, in front of
# the S3 server's port, for outage tests: killing RELAY_PID is the outage, relay_start again on
# the same port the recovery. Endpoints that go through it use http://127.0.0.1:$relay_port.
relay_port=
relay_start() {
  [[ -n $relay_port ]] ||
    relay_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 "$HARNESS_DIR/tcp_relay.py" "$relay_port" "${S3_ENDPOINT##*:}" >"$TEST_DIR/relay.out" 2>&1 &
  RELAY_PID=$!
  STARTED_PIDS+=("$RELAY_PID")
  wait_until "the relay" grep -q ready "$TEST_DIR/relay.out"
}

# Starts an instance in the current directory and waits for its "listening address=HOST:PORT"
# line (text or JSON log). SIGINT is reset to its default, as a container runtime would leave it
# (bash makes background jobs ignore it).
sm_start() {
  SM_INSTANCES=$((SM_INSTANCES + 1))
  SM_LOG=$LOG_DIR/sm-$SM_INSTANCES.log
  local listen=()
  [[ -z $SM_LISTEN ]] || listen=(--listen "$SM_LISTEN")
  env --default-signal=INT,QUIT "$STATE_MANAGER_BIN" "${listen[@]}" "$@" >"$SM_LOG" 2>&1 &
  SM_PID=$!
  STARTED_PIDS+=("$SM_PID")
  local end=$((SECONDS + DEADLINE)) port=""
  while :; do
    port=$(grep -m1 'listening' "$SM_LOG" 2>/dev/null |
      sed -nE 's/.*address"?[=:] ?"?[^ "]*:([0-9]+).*/\1/p') || true
    [[ -z $port ]] || break
    if ! pid_running "$SM_PID"; then
      local code=0
      wait "$SM_PID" || code=$?
      cat "$SM_LOG" >&2
      fail "state-manager $* exited ($code) before listening"
    fi
    ((SECONDS < end)) || fail "no 'listening address=' line within ${DEADLINE}s: $SM_LOG"
    sleep 0.05
  done
  SM_PORT=$port
  SM_URL=http://127.0.0.1:$port
}

# start NAME [ARGS...]: an instance in $TEST_DIR/NAME (its own directory, so its own lease
# owner); sets NAME_URL, NAME_PID, NAME_LOG. on NAME METHOD PATH [CURL ARGS...]: req against it.
start() {
  local name=$1
  shift
  mkdir -p "$TEST_DIR/$name"
  cd "$TEST_DIR/$name"
  sm_start "$@"
  cd "$TEST_DIR"
  printf -v "${name}_URL" %s "$SM_URL"
  printf -v "${name}_PID" %s "$SM_PID"
  printf -v "${name}_LOG" %s "$SM_LOG"
}
on() {
  local url=${1}_URL
  shift
  SM_URL=${!url} req "$@"
}

# wait_until WHAT COMMAND...: runs COMMAND every 50 ms until it succeeds; fails, naming WHAT,
# once DEADLINE seconds have passed. Never a fixed sleep as an assertion.
wait_until() {
  local what=$1 end=$((SECONDS + DEADLINE))
  shift
  until "$@"; do
    ((SECONDS < end)) || fail "waited ${DEADLINE}s for $what"
    sleep 0.05
  done
}

# Sends SIGTERM (or the signal in $2) to $1 (default SM_PID) and waits; SM_EXIT is its status.
sm_stop() {
  local pid=${1:-$SM_PID} sig=${2:-TERM}
  kill "-$sig" "$pid"
  if ! wait_exit "$pid"; then
    kill -KILL "$pid"
    fail "state-manager (pid $pid) did not exit within ${DEADLINE}s of SIG$sig"
  fi
  SM_EXIT=0
  wait "$pid" || SM_EXIT=$?
}

# req METHOD PATH [CURL ARGS...]: one request to SM_URL. STATUS is 000 if curl failed.
req() {
  local method=$1 path=$2
  shift 2
  BODY_FILE=$TEST_DIR/last-body
  HEADERS=$TEST_DIR/last-headers
  # curl --head writes the headers as the "body": HEAD leaves BODY_FILE empty (see
  # endpoints_test.sh for a check that no body follows on the wire).
  local how=(-X "$method" -o "$BODY_FILE")
  [[ $method != HEAD ]] || how=(--head -o /dev/null)
  : >"$BODY_FILE"
  : >"$HEADERS"
  STATUS=$(curl -s --max-time "$DEADLINE" "${how[@]}" -D "$HEADERS" \
    -w '%{http_code}' "$@" "$SM_URL$path") || true
  BODY=$(cat "$BODY_FILE")
  LAST_REQ="$method $path"
}

expect_status() {
  [[ $STATUS == "$1" ]] || fail "$LAST_REQ: expected status $1, got $STATUS; body: $BODY"
}

# expect_json PY_EXPR: the Python expression, with `j` the parsed body, must be true.
expect_json() {
  python3 - "$1" "$BODY_FILE" <<'EOF' || fail "$LAST_REQ: expected JSON where $1; body: $BODY"
import json, sys
j = json.load(open(sys.argv[2]))
sys.exit(0 if eval(sys.argv[1]) else 1)
EOF
}

# expect_header NAME VALUE_REGEX: the (last) header NAME's whole value matches the ERE.
expect_header() {
  local value
  value=$(tr -d '\r' <"$HEADERS" | grep -i "^$1:" | tail -n1 | sed -E 's/^[^:]*:[[:space:]]*//;s/[[:space:]]*$//')
  [[ $value =~ ^($2)$ ]] || fail "$LAST_REQ: header $1 is '$value', expected /$2/; headers: $(cat "$HEADERS")"
}

# Every answer of the API: JSON, the right Content-Length, a body ending in a newline.
expect_json_response() {
  expect_header Content-Type 'application/json.*'
  expect_header Content-Length "$(stat -c %s "$BODY_FILE")"
  [[ $(tail -c1 "$BODY_FILE" | od -An -c | tr -d ' ') == '\n' ]] ||
    fail "$LAST_REQ: body does not end with a newline: $BODY"
  expect_json 'isinstance(j, dict)'
}

# Runs the binary to completion (deadline $DEADLINE); CLI_OUT and CLI_ERR are files.
run_cli() {
  CLI_OUT=$TEST_DIR/cli-out
  CLI_ERR=$TEST_DIR/cli-err
  CLI_EXIT=0
  local started=$SECONDS
  timeout -k 5 "$DEADLINE" "$STATE_MANAGER_BIN" "$@" >"$CLI_OUT" 2>"$CLI_ERR" </dev/null || CLI_EXIT=$?
  # 124 is also an exit status a COMMAND may pass through: only a full deadline means timeout.
  ((CLI_EXIT != 124 || SECONDS - started < DEADLINE)) ||
    fail "state-manager $* still running after ${DEADLINE}s"
}

# A minimal valid configuration using the embedded file store under the test directory.
file_config() {
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects"}, "stacks": []}\n' "$TEST_DIR"
}

# sm_python [ARGS...] <<'EOF' ... : a Python snippet that can `import rawhttp` (port: SM_PORT).
sm_python() {
  SM_PORT=$SM_PORT PYTHONPATH=$HARNESS_DIR PYTHONDONTWRITEBYTECODE=1 python3 - "$@"
}
