#!/usr/bin/env bash
# Slow and idle clients time out (--header-timeout, --idle-timeout); --max-connections caps the
# connections without starving the ones already accepted.
source "$(dirname "$0")/harness.sh"

mkdir timeouts && cd timeouts
sm_start --header-timeout 1s --idle-timeout 2s

sm_python <<'EOF' || fail "header and idle timeouts"
import rawhttp

# Half a request line, then silence: 408, then the server closes.
slow = rawhttp.connect()
slow.sendall(b"GET / HT")
data = rawhttp.Reader(slow).until_eof(15)
assert data.startswith(b"HTTP/1.1 408"), data

# An idle keep-alive connection: answered, then closed by the server.
idle = rawhttp.connect()
idle.sendall(rawhttp.get("/healthz"))
r = rawhttp.Reader(idle)
assert r.response()[0] == 200
data = r.until_eof(15)
assert data == b"" or data.startswith(b"HTTP/1.1 408"), data

# A connection that never sends a byte is closed too.
silent = rawhttp.connect()
rawhttp.Reader(silent).until_eof(15)

# The server is still fine.
ok = rawhttp.connect()
ok.sendall(rawhttp.get("/healthz"))
assert rawhttp.Reader(ok).response()[0] == 200
EOF
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..

# --max-connections 2: a third connection is refused (503 or closed), the first two keep working,
# and a slot freed is usable again.
mkdir cap && cd cap
sm_start --max-connections 2
sm_python <<'EOF' || fail "connection cap"
import rawhttp, socket, time

a = rawhttp.connect()
b = rawhttp.connect()
# Both accepted: each answers a request (and stays open: keep-alive).
ra, rb = rawhttp.Reader(a), rawhttp.Reader(b)
for s, r in ((a, ra), (b, rb)):
    s.sendall(rawhttp.get("/healthz"))
    assert r.response()[0] == 200

def third_refused():
    """The third connection gets a 503 or is closed; it must not hang, nor be served."""
    try:
        c = rawhttp.connect(timeout=10)
    except (ConnectionRefusedError, ConnectionResetError):
        return "refused"
    try:
        c.sendall(rawhttp.get("/healthz"))
    except (BrokenPipeError, ConnectionResetError):
        return "reset"
    try:
        data = rawhttp.Reader(c).until_eof(10)
    except TimeoutError as e:
        raise AssertionError("a connection over the cap hangs instead of being refused") from e
    finally:
        c.close()
    if data == b"":
        return "closed"
    assert data.startswith(b"HTTP/1.1 503"), data
    return "503"

print("over the cap:", third_refused())

# The first two still work.
for s, r in ((a, ra), (b, rb)):
    s.sendall(rawhttp.get("/"))
    assert r.response()[0] == 200

# Free a slot: a new connection is served (the server may need a moment to notice the close).
a.close()
end = time.monotonic() + rawhttp.DEADLINE
while True:
    c = rawhttp.connect()
    try:
        c.sendall(rawhttp.get("/healthz"))
        status = rawhttp.Reader(c).response()[0]
    except (EOFError, ConnectionResetError, BrokenPipeError):
        status = None
    c.close()
    if status == 200:
        break
    assert status in (None, 503), status
    assert time.monotonic() < end, "a freed connection slot was never reused"
    time.sleep(0.1)
b.sendall(rawhttp.get("/healthz"))
assert rb.response()[0] == 200
EOF
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..
