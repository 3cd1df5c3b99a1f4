#!/usr/bin/env bash
# A header block that trickles in (a byte every 0.2 s, "slowloris") must time out too: the
# header timeout bounds the whole header block, not each read, or one client can hold a
# connection slot for ever.
source "$(dirname "$0")/harness.sh"

sm_start --header-timeout 1s --idle-timeout 2s
sm_python <<'PY' || fail "a header block trickling in, a byte every 0.2 s, never timed out (limit 1s)"
import rawhttp, select, time
trickle = rawhttp.connect()
trickle.sendall(b"GET / HTTP/1.1\r\n")
end = time.monotonic() + 15
answered = False
while time.monotonic() < end and not answered:
    try:
        trickle.sendall(b"X")
    except (BrokenPipeError, ConnectionResetError):
        answered = True
    answered = answered or bool(select.select([trickle], [], [], 0.2)[0])
assert answered, "still open after 15 s"
data = rawhttp.Reader(trickle).until_eof(15)
assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
PY
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
