#!/usr/bin/env bash
# The command line: --help, --version, bad arguments, environment variables,
# a port already in use.
source "$(dirname "$0")/harness.sh"

# --help: exit 0, usage on stdout naming every flag.
run_cli --help
((CLI_EXIT == 0)) || fail "--help exited $CLI_EXIT: $(cat "$CLI_ERR")"
for flag in --listen --data-dir --tmp-dir --restart-delay --timeout-stop --wait-for-config \
  --token-file --log-format --log-level --header-timeout --idle-timeout --max-connections \
  --help --version; do
  grep -q -- "$flag" "$CLI_OUT" || fail "--help does not mention $flag: $(cat "$CLI_OUT")"
done
[[ ! -e data && ! -e tmp ]] || fail "--help created data/ or tmp/"

# --version: exit 0, "state-manager 0.1.0".
run_cli --version
((CLI_EXIT == 0)) || fail "--version exited $CLI_EXIT"
grep -qx 'state-manager 0.1.0' "$CLI_OUT" || fail "--version printed: $(cat "$CLI_OUT")"

# A bad command line exits 2 with a message on stderr, and starts nothing.
expect_usage_error() {
  run_cli "$@"
  ((CLI_EXIT == 2)) || fail "state-manager $*: expected exit 2, got $CLI_EXIT; stderr: $(cat "$CLI_ERR")"
  [[ -s $CLI_ERR ]] || fail "state-manager $*: exit 2 without a message on stderr"
}
expect_usage_error --no-such-flag
grep -q -- 'no-such-flag' "$CLI_ERR" || fail "the message for an unknown flag does not name it: $(cat "$CLI_ERR")"
expect_usage_error --restart-delay soon
expect_usage_error --timeout-stop 10parsecs
expect_usage_error --header-timeout ''
expect_usage_error --listen nonsense
expect_usage_error --listen 127.0.0.1:99999
expect_usage_error --listen 127.0.0.1:notaport
expect_usage_error --log-format xml
expect_usage_error --log-level loud
expect_usage_error --max-connections many
expect_usage_error --data-dir   # a flag that needs a value, at the end

# A bad value from the environment is as bad as one on the command line.
STATE_MANAGER_RESTART_DELAY=soon run_cli
((CLI_EXIT == 2)) || fail "STATE_MANAGER_RESTART_DELAY=soon: expected exit 2, got $CLI_EXIT"

# --restart takes one of three policies.
run_cli --restart sometimes -- true
((CLI_EXIT == 2)) || fail "--restart sometimes: expected exit 2, got $CLI_EXIT"
grep -q -- '--restart' "$CLI_ERR" || fail "the error does not name --restart: $(cat "$CLI_ERR")"

# restore-db: a subcommand with its own --help, usage errors (2) and failures (1), that reads
# the store the applied configuration names and never replaces an existing file unasked.
run_cli --help
grep -q -- 'restore-db' "$CLI_OUT" || fail "--help does not mention restore-db"
run_cli restore-db --help
((CLI_EXIT == 0)) || fail "restore-db --help exited $CLI_EXIT: $(cat "$CLI_ERR")"
for flag in --to --at --generation --config --tmp-dir --force; do
  grep -q -- "$flag" "$CLI_OUT" || fail "restore-db --help does not mention $flag"
done
expect_usage_error restore-db
grep -q -- '--to' "$CLI_ERR" || fail "restore-db without --to: unclear message: $(cat "$CLI_ERR")"
expect_usage_error restore-db --to x.sqlite --at yesterday
expect_usage_error restore-db --to x.sqlite --generation 42
expect_usage_error restore-db --to x.sqlite --listen :80
mkdir restore && cd restore
expect_restore_failure() {
  run_cli restore-db "$@"
  ((CLI_EXIT == 1)) || fail "restore-db $*: expected exit 1, got $CLI_EXIT; stderr: $(cat "$CLI_ERR")"
  (($(wc -l <"$CLI_ERR") == 1)) || fail "restore-db $*: expected one line on stderr: $(cat "$CLI_ERR")"
}
expect_restore_failure --to db.sqlite
grep -q 'no configuration' "$CLI_ERR" || fail "restore-db without a configuration: $(cat "$CLI_ERR")"
mkdir tmp && file_config >tmp/config.json
expect_restore_failure --to db.sqlite
grep -q 'nothing to restore' "$CLI_ERR" || fail "restore-db from an empty store: $(cat "$CLI_ERR")"
[[ ! -e db.sqlite ]] || fail "restore-db wrote db.sqlite with nothing to restore"
mv tmp elsewhere
STATE_MANAGER_TMP_DIR=elsewhere run_cli restore-db --to db.sqlite
grep -q 'nothing to restore' "$CLI_ERR" || fail "STATE_MANAGER_TMP_DIR not honoured: $(cat "$CLI_ERR")"
echo precious >db.sqlite
expect_restore_failure --to db.sqlite --config elsewhere/config.json
grep -q -- '--force' "$CLI_ERR" || fail "restore-db over an existing file: $(cat "$CLI_ERR")"
[[ $(cat db.sqlite) == precious ]] || fail "restore-db changed an existing file"
cd ..

# Port already in use: exit 1 with a clear error.
mkdir first second
cd first
sm_start
first_pid=$SM_PID
first_url=$SM_URL
cd ../second
run_cli --listen "127.0.0.1:$SM_PORT"
((CLI_EXIT == 1)) || fail "second instance on port $SM_PORT: expected exit 1, got $CLI_EXIT"
grep -qiE 'in use|address|bind' "$CLI_ERR" ||
  fail "port in use: unclear message: $(cat "$CLI_ERR")"
req GET /
expect_status 200  # the first instance is unharmed
cd ..

# Environment variables configure every flag; flags win over them.
mkdir env && cd env
STATE_MANAGER_DATA_DIR=env-data STATE_MANAGER_TMP_DIR=env-tmp STATE_MANAGER_LOG_FORMAT=json sm_start
[[ -d env-data && -d env-tmp ]] || fail "STATE_MANAGER_DATA_DIR/TMP_DIR not honoured: $(ls)"
[[ ! -e data && ! -e tmp ]] || fail "default data/ or tmp/ created although the environment named others"
head -n1 "$SM_LOG" | python3 -c 'import json,sys; json.loads(sys.stdin.readline())' ||
  fail "STATE_MANAGER_LOG_FORMAT=json not honoured: $(head -n1 "$SM_LOG")"
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..

mkdir flags && cd flags
STATE_MANAGER_DATA_DIR=env-data sm_start --data-dir flag-data
[[ -d flag-data ]] || fail "--data-dir flag-data not created"
[[ ! -e env-data ]] || fail "STATE_MANAGER_DATA_DIR won over --data-dir"
sm_stop
cd ..

# STATE_MANAGER_LISTEN alone (no --listen flag) picks the address.
mkdir listen && cd listen
SM_LISTEN='' STATE_MANAGER_LISTEN=127.0.0.1:0 sm_start
req GET /healthz
expect_status 200
cd ..

sm_stop "$first_pid"
((SM_EXIT == 0)) || fail "first instance: exit $SM_EXIT after SIGTERM"
