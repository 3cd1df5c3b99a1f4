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

# A small descriptor limit (256): the cap is lowered to fit it, and with the table full of idle
# connections the lease and the store still have descriptors: a configuration (lease taken,
# configuration stored) and a checkpoint (copied, uploaded) succeed.
sm_stop
cat >limited.sh <<SH
#!/bin/sh
exec prlimit --nofile=256:256 "$STATE_MANAGER_BIN" "\$@"
SH
chmod +x limited.sh
real_bin=$STATE_MANAGER_BIN
STATE_MANAGER_BIN=$TEST_DIR/limited.sh
mkdir limited && cd limited
sm_start --token-file ../token
cd ..
STATE_MANAGER_BIN=$real_bin
grep -q 'max-connections lowered' "$SM_LOG" || fail "the connection cap was not lowered to fit 256 descriptors: $(cat "$SM_LOG")"
sm_python "$(file_config)" <<'PY' || fail "see above"
import rawhttp, json, subprocess, sys, time
idle = [rawhttp.connect() for _ in range(400)]
def call(method, path, body=None):
    args = ["curl", "-s", "--max-time", "20", "-o", "/dev/stderr", "-w", "%{http_code}", "-X", method,
            "-H", "Authorization: Bearer secret-token", f"http://127.0.0.1:{rawhttp.PORT}{path}"]
    if body is not None:
        args += ["-d", body]
    return subprocess.run(args, capture_output=True, text=True)
for method, path, body in (("GET", "/healthz", None), ("POST", "/config", sys.argv[1]),
                           ("POST", "/checkpoint", '{"id": "c1"}')):
    out = call(method, path, body)
    if out.stdout != "200":
        print(f"FAIL: {method} {path} answered '{out.stdout}' with 400 idle connections open "
              f"and 256 descriptors: {out.stderr}", file=sys.stderr)
        sys.exit(1)
end = time.monotonic() + 20
while True:
    out = call("GET", "/checkpoints/c1")
    if out.stdout == "200" and json.loads(out.stderr).get("upload", {}).get("state") == "done":
        break
    if time.monotonic() > end:
        print(f"FAIL: the checkpoint was not uploaded: {out.stdout} {out.stderr}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
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
