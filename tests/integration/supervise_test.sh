#!/usr/bin/env bash
# The supervised COMMAND: exit-status passthrough, exec failures, restarts, stop escalation,
# signal forwarding, orphan reaping, --wait-for-config, and what GET / shows.
source "$(dirname "$0")/harness.sh"

# pid_of_process: COMMAND's pid as GET / shows it ("" when none).
pid_of_process() {
  curl -s --max-time 5 "$SM_URL/" | python3 -c \
    'import json,sys; p=json.load(sys.stdin)["process"]; print(p["pid"] if p and p["pid"] else "")'
}
# wait_for PY_EXPR: polls GET / until the expression (j = the body) holds.
wait_for() {
  local end=$((SECONDS + DEADLINE))
  until req GET / && python3 -c "import json,sys; j=json.load(open('$BODY_FILE')); sys.exit(0 if ($1) else 1)" 2>/dev/null; do
    ((SECONDS < end)) || fail "GET / never showed $1; last: $BODY"
    sleep 0.05
  done
}

# --- Exit status: every code 0-255 passes through, as with tini. --------------------------------
for code in $(seq 0 255); do
  run_cli --listen 127.0.0.1:0 --restart never -- sh -c "exit $code"
  ((CLI_EXIT == code)) || fail "exit $code came out as $CLI_EXIT: $(cat "$CLI_ERR")"
done
# Death by signal n is 128+n.
for sig in TERM KILL USR1 SEGV INT HUP; do
  run_cli --listen 127.0.0.1:0 --restart never -- sh -c "kill -$sig \$\$"
  expected=$((128 + $(kill -l "$sig")))
  ((CLI_EXIT == expected)) || fail "death by SIG$sig came out as $CLI_EXIT, expected $expected"
done

# --- Exec failures: 127 missing, 126 not executable, with a message. -------------------------
run_cli --listen 127.0.0.1:0 --restart never -- ./no-such-program
((CLI_EXIT == 127)) || fail "missing program: exit $CLI_EXIT"
grep -q 'no-such-program' "$CLI_ERR" || fail "no message naming the program: $(cat "$CLI_ERR")"
printf 'not a program\n' >not-executable && chmod 644 not-executable
run_cli --listen 127.0.0.1:0 --restart never -- ./not-executable
((CLI_EXIT == 126)) || fail "non-executable program: exit $CLI_EXIT"
grep -qi 'permission denied' "$CLI_ERR" || fail "no errno in the message: $(cat "$CLI_ERR")"

# --- stdout and stderr reach ours unchanged and separate; arguments arrive as given. ----------
run_cli --listen 127.0.0.1:0 --restart never -- sh -c 'printf "%s|" "$@"; echo to-stderr >&2' sh 'a b' '' 'c*'
[[ $(cat "$CLI_OUT") == 'a b||c*|' ]] || fail "stdout or argv altered: '$(cat "$CLI_OUT")'"
grep -qx 'to-stderr' "$CLI_ERR" || fail "child stderr not on stderr: $(cat "$CLI_ERR")"
grep -q 'to-stderr' "$CLI_OUT" && fail "child stderr leaked into stdout"

# --- --log-prefix: each line carries the program's name, on the stream it was written to; a
# grandchild holding the pipe does not hold up the exit.
run_cli --listen 127.0.0.1:0 --log-prefix --restart never -- sh -c 'echo one; printf "two\nthree"; echo err >&2; (sleep 30 & echo $! >grandchild.pid); exit 5'
# The grandchild outlived us on purpose; it goes now.
if [[ -s grandchild.pid ]]; then kill "$(cat grandchild.pid)" 2>/dev/null || true; fi
((CLI_EXIT == 5)) || fail "--log-prefix: exit $CLI_EXIT"
[[ $(cat "$CLI_OUT") == $'[sh] one\n[sh] two\n[sh] three' ]] || fail "prefixed stdout: '$(cat "$CLI_OUT")'"
grep -qx '\[sh\] err' "$CLI_ERR" || fail "prefixed stderr missing: $(cat "$CLI_ERR")"

# --- --log-prefix with a reader of our stdout that stalls (a full pipe): the child blocks on
# its own pipe, and the API still answers. Without a non-blocking writer, state-manager itself
# would hang in write(2).
mkdir stalled && cd stalled
mkfifo out
exec {stall_fd}<>out  # held open, never read: the pipe fills and stays full
"$STATE_MANAGER_BIN" --listen 127.0.0.1:0 --log-prefix -- sh -c 'while :; do echo spam spam spam spam spam; done' >out 2>log &
STARTED_PIDS+=("$!")
stalled_pid=$!
wait_until "the stalled instance to listen" grep -q 'listening' log
stalled_port=$(sed -nE 's/.*address=[^ ]*:([0-9]+).*/\1/p' log | head -n1)
# The pipe fills up: at least 48 KiB of its 64 (our writes are whole chunks of up to 16 KiB).
wait_until "the child to block on its output" python3 -c 'import fcntl,sys,termios,array; b=array.array("i",[0]); fcntl.ioctl(int(sys.argv[1]), termios.FIONREAD, b); sys.exit(0 if b[0] >= 48000 else 1)' "$stall_fd"
for _ in 1 2 3; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$stalled_port/healthz") || true
  [[ $code == 200 ]] || fail "API stalled behind a full stdout: GET /healthz gave '$code'"
done
sm_stop "$stalled_pid"
exec {stall_fd}>&-
cd ..

# --- COMMAND inherits none of our own descriptors (API sockets, pidfds, signalfd, epoll,
# pipes); what state-manager itself inherited passes through, as with any init. -------------
mkdir fds && cd fds
sm_start -- sh -c 'ls -l /proc/$$/fd >fds.txt; exec sleep 1000'
wait_until "COMMAND to list its fds" test -s fds.txt
extra=$(awk 'NR > 1 && $9 !~ /^[012]$/ && $11 ~ /^(socket|pipe|anon_inode):/' fds.txt)
[[ -z $extra ]] || fail "COMMAND inherited descriptors of ours: $extra"
sm_stop
cd ..

# --- When COMMAND's leader exits on its own, the rest of its group does not outlive it into
# the next run: SIGTERM at once, SIGKILL before the restart (here one that ignores SIGTERM).
mkdir strays && cd strays
sm_start --restart-delay 300ms --timeout-stop 1s -- sh -c '(trap "" TERM; exec sleep 1000) & echo $! >>bg.pids; sleep 0.2; exit 3'
wait_until "the second run" sh -c 'test "$(cat bg.pids 2>/dev/null | wc -l)" -ge 2'
first_bg=$(head -n1 bg.pids)
wait_until "the first run's leftover to be killed" sh -c "! kill -0 $first_bg 2>/dev/null || grep -q '^State:.*Z' /proc/$first_bg/status"
sm_stop
while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <bg.pids
cd ..

# --- on-failure: a clean exit ends it (and us, with 0); a failure restarts. ------------------
run_cli --listen 127.0.0.1:0 --restart on-failure -- true
((CLI_EXIT == 0)) || fail "on-failure with a clean exit: exit $CLI_EXIT"
mkdir onfail && cd onfail
sm_start --restart on-failure --restart-delay 0 -- sh -c 'exit 3'
wait_for 'j["process"]["restarts"] >= 3 and j["process"]["last_exit"]["code"] == 3'
sm_stop
((SM_EXIT == 0)) || fail "on-failure, stopped by SIGTERM: exit $SM_EXIT"
cd ..

# --- Backoff doubles the delay; the circuit breaker gives up and we exit with its status. ----
run_cli --listen 127.0.0.1:0 --restart-delay 100ms --restart-backoff-max 800ms --restart-max 6 \
  -- sh -c 'exit 4'
((CLI_EXIT == 4)) || fail "circuit breaker: expected exit 4, got $CLI_EXIT"
delays=$(grep -o 'restart_in=[0-9a-z]*' "$CLI_ERR" | cut -d= -f2 | tr '\n' ' ')
[[ $delays == '100ms 200ms 400ms 800ms 800ms ' ]] || fail "backoff delays: '$delays'"
grep -q 'failed too often' "$CLI_ERR" || fail "no log line saying it gave up: $(cat "$CLI_ERR")"

# --- Restart after an unexpected exit, with a new PID; GET / tells the story. ------------------
mkdir restart && cd restart
sm_start --restart-delay 0 -- sleep 1000
wait_for 'j["process"]["state"] == "running" and j["process"]["pid"]'
expect_json 'j["process"]["command"] == ["sleep", "1000"] and j["process"]["restarts"] == 0'
first=$(pid_of_process)
kill -TERM "$first"
wait_for "j['process']['restarts'] == 1 and j['process']['pid'] not in (None, $first)"
expect_json 'j["process"]["last_exit"]["signal"] == "SIGTERM" and j["process"]["last_exit"]["status"] == 143'
expect_json 'j["process"]["refused_transitions"] == 0'
second=$(pid_of_process)
[[ -d /proc/$second ]] || fail "the new pid $second does not exist"
# /metrics says the same, in Prometheus' text format.
req GET /metrics
expect_status 200
expect_header Content-Type 'text/plain; version=0\.0\.4.*'
python3 - "$BODY_FILE" <<'PY' || fail "metrics: $BODY"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+]+$')
bad = [l for l in lines if not l.startswith("#") and not sample.match(l)]
assert not bad, bad
values = dict(l.rsplit(" ", 1) for l in lines if not l.startswith("#"))
assert values["state_manager_process_restarts_total"] == "1", values
assert values['state_manager_process_state{state="running"}'] == "1", values
assert values["state_manager_process_up"] == "1", values
assert values["state_manager_process_last_exit_status"] == "143", values
PY
# An intentional stop is not followed by a restart, and we exit 0 (--restart always).
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
wait_exit "$second" 5 || fail "COMMAND (pid $second) outlived state-manager"
grep -q 'restarts' "$SM_LOG" || true
cd ..

# --- --restart never and SIGTERM: our status is COMMAND's (143 for sleep). --------------------
mkdir never && cd never
sm_start --restart never -- sleep 1000
wait_for 'j["process"]["state"] == "running"'
sm_stop
((SM_EXIT == 143)) || fail "--restart never, SIGTERM: expected 143, got $SM_EXIT"
cd ..

# --- A COMMAND that ignores SIGTERM is killed after --timeout-stop. -------------------------
mkdir stubborn && cd stubborn
sm_start --restart never --timeout-stop 1s -- sh -c 'trap "" TERM; while :; do sleep 0.1; done'
wait_for 'j["process"]["state"] == "running"'
stubborn=$(pid_of_process)
sm_stop
((SM_EXIT == 137)) || fail "a TERM-ignoring COMMAND should end by SIGKILL (137), got $SM_EXIT"
[[ ! -d /proc/$stubborn ]] || fail "pid $stubborn survived"
cd ..

# --- Stop reaches the whole group: one that ignores SIGTERM and outlives the leader is killed
# at the deadline too, not left running. ------------------------------------------------------
mkdir group && cd group
sm_start --restart never --timeout-stop 1s -- sh -c '(trap "" TERM; exec sleep 987653) & exec sleep 1000'
wait_for 'j["process"]["state"] == "running"'
wait_until "the group member to start" pgrep -f "sleep 987653"
sm_stop
end=$((SECONDS + DEADLINE))
while pgrep -f 'sleep 987653' >/dev/null; do
  ((SECONDS < end)) || fail "a member of COMMAND's group survived the stop: $(pgrep -af 'sleep 987653')"
  sleep 0.05
done
cd ..

# --- Signals other than TERM/INT reach COMMAND. ------------------------------------------
mkdir forward && cd forward
signals="HUP QUIT USR1 USR2 WINCH ALRM URG IO PWR VTALRM PROF XCPU XFSZ TSTP TTIN TTOU CONT"
# One process that handles every one of them (a shell's children would be stopped by TSTP).
sm_start -- python3 -c '
import signal, sys
def note(number, frame):
    with open("got", "a") as f:
        f.write(signal.Signals(number).name[3:] + "\n")
for name in sys.argv[1:]:
    signal.signal(getattr(signal, "SIG" + name), note)
with open("got", "a") as f:
    f.write("ready\n")
while True:
    signal.pause()
' $signals
wait_until "COMMAND to start" test -s got
for s in $signals; do
  kill "-$s" "$SM_PID"
  end=$((SECONDS + DEADLINE))
  until grep -qx "$s" got; do
    ((SECONDS < end)) || fail "SIG$s did not reach COMMAND; got: $(tr '\n' ' ' <got)"
    sleep 0.02
  done
done
req GET /
expect_json 'j["process"]["restarts"] == 0'  # nothing above may have killed it
expect_json 'j["process"]["refused_transitions"] == 0'
sm_stop
cd ..

# --- Orphans re-parented to us are reaped: no zombie is left. -----------------------------
mkdir orphans && cd orphans
sm_start -- sh -c 'for i in 1 2 3 4 5; do (sleep 0.2 &); done; exec sleep 1000'
end=$((SECONDS + DEADLINE))
while :; do
  zombies=$(ps --ppid "$SM_PID" -o stat= | grep -c '^Z' || true)
  children=$(ps --ppid "$SM_PID" -o pid= | wc -l)
  # The orphans (sleep 0.2) were ours while they ran; once gone, only COMMAND is left.
  ((zombies == 0 && children == 1)) && break
  ((SECONDS < end)) || fail "zombies: $zombies, children: $children; $(ps --ppid "$SM_PID" -o pid,stat,cmd)"
  sleep 0.05
done
req GET /metrics
grep -qE '^state_manager_orphans_reaped_total [1-9]' "$BODY_FILE" ||
  fail "orphans reaped but not counted: $(grep orphans "$BODY_FILE")"
sm_stop
cd ..

# --- As PID 1 of a PID namespace: 200 orphans reaped, no zombie left, status passed through. --
mkdir pid1 && cd pid1
if unshare --pid --fork --mount-proc true 2>/dev/null; then
  run_cli_in_namespace() {
    timeout -k 5 "$DEADLINE" unshare --pid --fork --mount-proc "$STATE_MANAGER_BIN" \
      --listen 127.0.0.1:0 --restart never -- sh -c "$1" >/dev/null 2>stderr.txt
  }
  # COMMAND makes 200 orphans, waits until they are all gone (each reaped as it exits), then
  # counts zombies in the namespace; it must see state-manager as PID 1.
  status=0
  run_cli_in_namespace 'for i in $(seq 1 200); do (sleep 0.2 &); done
    end=$(($(date +%s) + 15))
    while [ "$(ps -eo comm= | grep -c "^sleep")" -gt 0 ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
    ps -eo stat= | grep -c "^Z" >zombies.txt
    ps -o comm= -p 1 >init.txt
    exit 9' || status=$?
  ((status == 9)) || fail "as PID 1: exit $status, expected 9: $(cat stderr.txt)"
  [[ $(cat init.txt) == state-manager ]] || fail "PID 1 is $(cat init.txt)"
  [[ $(cat zombies.txt) == 0 ]] || fail "$(cat zombies.txt) zombies left in the namespace"
  # SIGTERM to PID 1 is handled (a PID 1 without a handler would ignore it).
  unshare --pid --fork --mount-proc --kill-child=KILL \
    "$STATE_MANAGER_BIN" --listen 127.0.0.1:0 --restart never -- sleep 1000 2>stderr.txt &
  unshare_pid=$!
  STARTED_PIDS+=("$unshare_pid")
  end=$((SECONDS + DEADLINE))
  until grep -q 'COMMAND running' stderr.txt; do
    ((SECONDS < end)) || fail "COMMAND never ran under PID 1: $(cat stderr.txt)"
    sleep 0.05
  done
  init=$(pgrep -P "$unshare_pid" -x state-manager) || fail "no state-manager under unshare"
  kill -TERM "$init"
  status=0
  wait "$unshare_pid" || status=$?
  ((status == 143)) || fail "PID 1 after SIGTERM: exit $status, expected 143: $(cat stderr.txt)"
else
  log "unshare --pid is not permitted here; skipping the PID 1 case"
fi
cd ..

# --- --wait-for-config: COMMAND starts with the first configuration. ----------------------
mkdir waits && cd waits
sm_start --wait-for-config -- sleep 1000
req GET /
expect_json 'j["process"]["state"] == "pending" and j["process"]["pid"] is None'
req POST /config -d "$(file_config)"
expect_status 200
wait_for 'j["process"]["state"] == "running" and j["process"]["pid"]'
sm_stop
cd ..

# Started with a saved configuration, it does not wait.
cd waits
sm_start --wait-for-config -- sleep 1000
wait_for 'j["process"]["state"] == "running"'
sm_stop
