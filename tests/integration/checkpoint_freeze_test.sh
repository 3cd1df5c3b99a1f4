#!/usr/bin/env bash
# "checkpoint_mode": "freeze": a checkpoint pauses COMMAND and what it forked with the cgroup
# freezer instead of stopping them, so they keep their PIDs and their work; the copy is still
# consistent; a restore stops and restarts as ever; processes that a killed state-manager left
# frozen are thawed by the next start.
source "$(dirname "$0")/harness.sh"

if ! [[ -w /sys/fs/cgroup/unified || -w /sys/fs/cgroup/freezer ]]; then
  log "skipped: no writable cgroup freezer on this machine"
  exit 77
fi

# COMMAND counts in data/env/counter (rewritten whole, by rename, every 10 ms), and has forked
# a child of its own before any checkpoint.
mkdir -p data/env
cat >counter.sh <<'SH'
sleep 1000 &
echo $! >child.pid
i=0
while :; do
  i=$((i + 1))
  echo "$i" >data/env/counter.tmp
  mv data/env/counter.tmp data/env/counter
  sleep 0.01
done
SH
sm_start -- sh counter.sh
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\"},
  \"stacks\": [\"database\"], \"checkpoint_mode\": \"freeze\"}"
expect_status 200
req GET /config
expect_json 'j["checkpoint_mode"] == "freeze"'
wait_until "the counter" test -s data/env/counter
wait_until "the child's pid" test -s child.pid
req GET /
command_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
child_pid=$(cat child.pid)
echo "kept" >data/env/kept.txt

req POST /checkpoint -d '{"id": "f1"}'
expect_status 200
expect_json 'j["manifest"]["quiesce"] == {"mode": "freeze", "reach": "cgroup"}'
[[ $(cat tmp/checkpoints/f1/mount/kept.txt) == kept ]] || fail "mount/kept.txt is not the file"
[[ $(cat tmp/checkpoints/f1/mount/counter) =~ ^[0-9]+$ ]] || fail "the copied counter is not a number"
# The same processes, in our group, thawed, and still counting.
req GET /
expect_json "j[\"process\"][\"pid\"] == $command_pid and j[\"process\"][\"state\"] == \"running\""
for pid in "$command_pid" "$child_pid"; do
  grep -q "state-manager-$SM_PID\$" "/proc/$pid/cgroup" ||
    fail "process $pid is not in the freezer group: $(cat "/proc/$pid/cgroup")"
done
group=$(sed -nE "s|^0::(.*state-manager-$SM_PID)\$|/sys/fs/cgroup/unified\1|p" "/proc/$command_pid/cgroup")
if [[ -n $group ]]; then
  grep -qx 'frozen 0' "$group/cgroup.events" || fail "the group is still frozen: $(cat "$group/cgroup.events")"
fi
copied=$(cat tmp/checkpoints/f1/mount/counter)
wait_until "the counter to move on past the checkpoint" \
  sh -c "[ \"\$(cat data/env/counter 2>/dev/null || echo 0)\" -gt $copied ]"

# A restore stops and starts again, whatever the mode: new PIDs, the checkpoint's files.
echo "changed" >data/env/kept.txt
req POST /restore -d '{"id": "f1"}'
expect_status 200
[[ $(cat data/env/kept.txt) == kept ]] || fail "the restore did not bring kept.txt back"
wait_until "COMMAND running again with a new PID" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; p=json.load(sys.stdin)[\"process\"]; sys.exit(0 if p[\"state\"] == \"running\" and p[\"pid\"] != $command_pid else 1)'"
! pid_running "$command_pid" || fail "the old COMMAND still runs after the restore"

# A second checkpoint freezes the new COMMAND (started after the group was made) as well.
req GET /
command_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
req POST /checkpoint -d '{"id": "f2"}'
expect_status 200
expect_json 'j["manifest"]["quiesce"]["mode"] == "freeze"'
grep -q "state-manager-$SM_PID\$" "/proc/$command_pid/cgroup" || fail "the new COMMAND was not adopted"

# Killed while the processes are frozen (as by a kill -9 in the middle of a checkpoint): the
# next start thaws them. The freeze is made here by hand, then state-manager is killed.
[[ -n $group ]] || { log "no cgroup v2 group: the kill -9 part is skipped"; exit 0; }
old_pid=$SM_PID
echo 1 >"$group/cgroup.freeze"
wait_until "the group frozen" grep -qx 'frozen 1' "$group/cgroup.events"
kill -KILL "$old_pid"
wait_exit "$old_pid" || fail "state-manager survived kill -9"
sm_start -- sleep 1000
wait_until "the orphaned COMMAND thawed" grep -qx 'frozen 0' "$group/cgroup.events"
before=$(cat data/env/counter)
wait_until "the orphaned COMMAND counting again" \
  sh -c "[ \"\$(cat data/env/counter 2>/dev/null || echo 0)\" -gt $before ]"
# The orphans are ours to end (the cleanup kills what remains in the group, by PID).
kill -KILL "$command_pid" "$(cat child.pid)" 2>/dev/null || true
