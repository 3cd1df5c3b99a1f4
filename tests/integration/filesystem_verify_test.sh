#!/usr/bin/env bash
# The filesystem component against an in-memory model (tests/tools/fs_verify.py): thousands of
# random writes (across 4 MiB blocks and the 64 MiB chunk boundary), truncates up and down,
# reads, mmap reads and MAP_SHARED writes, fsyncs and reopens on one file, every read compared;
# then the file is checked again after an unmount and a mount (a restart of state-manager), and
# more operations follow on the remounted file.
source "$(dirname "$0")/harness.sh"

[[ -e /dev/fuse ]] || { log "no /dev/fuse here: skipped"; exit 77; }
DEADLINE=60
mnt=$TEST_DIR/mnt
verify=$HARNESS_DIR/../tools/fs_verify.py

sm_start
req POST /config -d "$(printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects", "env_dir": "%s"}, "stacks": ["filesystem"]}' "$TEST_DIR" "$mnt")"
expect_status 200
timeout 600 python3 "$verify" "$mnt" --seed 14 --ops 3000 --max-size 70M --save "$TEST_DIR/model" \
  >"$LOG_DIR/verify-1.txt" 2>&1 || fail "random operations: $(tail -5 "$LOG_DIR/verify-1.txt")"
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"
sm_start
wait_until "the mount after the restart" grep -q " $mnt fuse.juicefs " /proc/self/mounts
timeout 600 python3 "$verify" "$mnt" --seed 15 --check "$TEST_DIR/model" --ops 1000 --max-size 70M \
  >"$LOG_DIR/verify-2.txt" 2>&1 || fail "after the remount: $(tail -5 "$LOG_DIR/verify-2.txt")"
sm_stop
exit 0
