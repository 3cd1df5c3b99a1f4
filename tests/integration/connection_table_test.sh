#!/usr/bin/env bash
# A full connection table must not lock the health check out: with --max-connections idle,
# unauthenticated connections open, a new one takes the place of the one idle longest, so
# /healthz answers; a connection whose request is being answered (an event stream) is never
# closed for room; and when every slot is being answered, a new connection gets 503.
source "$(dirname "$0")/harness.sh"

max=1024
python3 -c "import resource; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); exit(0 if h == resource.RLIM_INFINITY or h >= $max + 200 else 1)" || {
  log "skipped: the open-file limit is below $((max + 200))"
  exit 77
}
printf 'secret-token\n' >token
sm_start --token-file token --max-connections "$max"

sm_python "$max" <<'PY' || fail "see above"
import rawhttp, resource, socket, subprocess, sys, time
maximum = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

# An event stream, with the token: a request being answered for as long as it is open.
stream = rawhttp.connect()
stream.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token\r\n\r\n")
reader = rawhttp.Reader(stream)
status, headers, _ = reader.response(head_only=True)
assert status == 200, f"GET /events answered {status}"

# Fill the table with idle connections that never send a byte (no token either).
idle = []
for _ in range(maximum + 50):
    idle.append(rawhttp.connect())

def healthz():
    out = subprocess.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                          f"http://127.0.0.1:{rawhttp.PORT}/healthz"], capture_output=True, text=True)
    return out.stdout

for attempt in range(3):
    code = healthz()
    if code != "200":
        print(f"FAIL: /healthz answered '{code}' with {maximum + 50} idle connections open", file=sys.stderr)
        sys.exit(1)

# The oldest idle connections were closed to make room (EOF, or a reset); the newest still open.
def closed(s):
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)
end = time.monotonic() + 20
while not closed(idle[0]) and time.monotonic() < end:
    time.sleep(0.05)
if not closed(idle[0]):
    print("FAIL: the oldest idle connection is still open", file=sys.stderr)
    sys.exit(1)
if closed(idle[-1]):
    print("FAIL: the newest idle connection was closed", file=sys.stderr)
    sys.exit(1)

# The event stream was not closed for room.
stream.setblocking(False)
try:
    data = stream.recv(65536)
    if data == b"":
        print("FAIL: the event stream was closed to make room", file=sys.stderr)
        sys.exit(1)
except BlockingIOError:
    pass
stream.setblocking(True)
for s in idle:
    s.close()
PY

# Every slot being answered (event streams): a new connection gets 503, at once.
sm_stop
sm_start --token-file token --max-connections 2
sm_python <<'PY' || fail "see above"
import rawhttp, subprocess, sys
streams = []
for _ in range(2):
    s = rawhttp.connect()
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token\r\n\r\n")
    status, _, _ = rawhttp.Reader(s).response(head_only=True)
    assert status == 200, status
    streams.append(s)
out = subprocess.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                      f"http://127.0.0.1:{rawhttp.PORT}/healthz"], capture_output=True, text=True)
if out.stdout != "503":
    print(f"FAIL: with every slot answering, /healthz answered '{out.stdout}', not 503", file=sys.stderr)
    sys.exit(1)
PY
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
