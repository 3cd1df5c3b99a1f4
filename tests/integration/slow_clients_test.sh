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

# --max-connections 2: a third connection takes the place of the connection idle longest (a
# full table of idle clients must not lock out a health check; connection_table_test.sh has the
# rest: 503 when every slot is being answered). The other keeps working.
mkdir cap && cd cap
sm_start --max-connections 2
sm_python <<'EOF' || fail "connection cap"
import rawhttp, socket, time

a = rawhttp.connect()
b = rawhttp.connect()
# Both accepted: each answers a request (and stays open: keep-alive). a has waited longest.
ra, rb = rawhttp.Reader(a), rawhttp.Reader(b)
for s, r in ((a, ra), (b, rb)):
    s.sendall(rawhttp.get("/healthz"))
    assert r.response()[0] == 200

c = rawhttp.connect()
c.sendall(rawhttp.get("/healthz"))
assert rawhttp.Reader(c).response()[0] == 200, "the third connection was not served"
assert ra.until_eof(10) == b"", "the connection idle longest was not closed"
b.sendall(rawhttp.get("/"))
assert rb.response()[0] == 200
EOF
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..
