#!/usr/bin/env bash
# checkpoint_mode "stop" stops the whole tree: a daemon that COMMAND started with setsid (its
# own session and process group, out of reach of COMMAND's group) is stopped before the
# snapshot too, through state-manager's cgroup, and writes nothing while the copy is made; the
# manifest says the quiesce reached the cgroup. After the checkpoint COMMAND starts again (and
# with it a new daemon).
source "$(dirname "$0")/harness.sh"

if ! [[ -w /sys/fs/cgroup/unified || -w /sys/fs/cgroup/freezer ]]; then
  log "skipped: no writable cgroup on this machine"
  exit 77
fi
command -v setsid >/dev/null || { log "skipped: no setsid"; exit 77; }

# Every daemon started registers itself in daemons.list; whatever state-manager left running
# (before the fix: all of them) is killed here, before the harness's cleanup.
kill_daemons() {
  local pid
  for pid in $(cat "$TEST_DIR/daemons.list" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'status=$?; kill_daemons; harness_cleanup $status' EXIT

# The daemon appends a counter to data/env/daemon.log every 10 ms; on SIGTERM it appends
# "stopped" and exits. So the copy's last line says whether it was stopped before the copy.
mkdir -p data/env
cat >daemon.sh <<'SH'
echo $$ >>daemons.list
trap 'echo stopped >>data/env/daemon.log; exit 0' TERM
i=0
while :; do
  i=$((i + 1))
  echo "$i" >>data/env/daemon.log
  sleep 0.01
done
SH
# started: "<COMMAND's pid> <its daemon's pid>", replaced whole.
cat >command.sh <<'SH'
setsid sh daemon.sh </dev/null &
echo "$$ $!" >started.tmp
mv started.tmp started
exec sleep 1000
SH
sm_start -- sh command.sh
req POST /config -d "$(file_config)"
expect_status 200

# The daemon of the COMMAND that runs now (the configuration restarted it once).
command_pid() {
  curl -s --max-time 5 "$SM_URL/" | python3 -c 'import json,sys; p=json.load(sys.stdin)["process"]; print(p["pid"] if p["state"] == "running" else "")'
}
current_daemon() {
  local pid
  pid=$(command_pid)
  [[ -n $pid && -s started && $(cut -d' ' -f1 started) == "$pid" ]] || return 1
  daemon_pid=$(cut -d' ' -f2 started)
}
wait_until "COMMAND's daemon" current_daemon
pid_running "$daemon_pid" || fail "the daemon is not running"
[[ $(ps -o sid= -p "$daemon_pid" | tr -d ' ') == "$daemon_pid" ]] || fail "the daemon is not in a session of its own"
wait_until "the daemon's first lines" sh -c '[ "$(wc -l <data/env/daemon.log)" -ge 3 ]'
first_daemon=$daemon_pid

req POST /checkpoint -d '{"id": "s1"}'
expect_status 200
last=$(tail -n1 tmp/checkpoints/s1/mount/daemon.log)
[[ $last == stopped ]] ||
  fail "the daemon was still writing during the snapshot (last line of the copy: '$last')"
! pid_running "$first_daemon" || fail "the daemon (pid $first_daemon) still runs after a 'stop' checkpoint"
expect_json 'j["manifest"]["quiesce"] == {"mode": "stop", "reach": "cgroup"}'

# Resumed: COMMAND runs again, and has started a new daemon.
new_daemon() { current_daemon && [[ $daemon_pid != "$first_daemon" ]]; }
wait_until "COMMAND's new daemon" new_daemon
pid_running "$daemon_pid" || fail "the new daemon is not running"
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
