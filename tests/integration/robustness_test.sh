#!/usr/bin/env bash
# Fixes from review, each shown from outside: start-up that cannot be stopped by a bad
# tmp/config.json, connections that are not mistaken for slow ones, HTTP/1.0 keep-alive,
# descriptor limits, ids in paths, secrets kept out of the process environment and of URLs.
source "$(dirname "$0")/harness.sh"

# --- A FIFO in place of tmp/config.json: start-up neither hangs nor fails. -------------------
mkdir fifo && cd fifo
mkdir -p tmp && mkfifo tmp/config.json
sm_start
req GET /
expect_status 200
expect_json 'j["configured"] is False'
[[ -p tmp/config.json.invalid ]] || fail "the FIFO was not moved aside: $(ls -l tmp)"
grep -q 'not a regular file' "$SM_LOG" || fail "the warning does not say why: $(cat "$SM_LOG")"
sm_stop
cd ..

# --- A bad tmp/config.json that cannot be moved aside: still starts, unconfigured. -----------
mkdir immutable && cd immutable
mkdir -p tmp && echo 'not json' >tmp/config.json
if chattr +i tmp 2>/dev/null; then
  sm_start
  chattr -i tmp
  req GET /
  expect_status 200
  expect_json 'j["configured"] is False'
  [[ -f tmp/config.json ]] || fail "the file should have been left in place"
  grep -q 'left in place' "$SM_LOG" || fail "the warning does not say the file stayed: $(cat "$SM_LOG")"
  sm_stop
else
  log "chattr +i not supported on $(df --output=fstype . | tail -n1); skipping that case"
fi
cd ..

# --- Connections ------------------------------------------------------------------------------
printf '  spaced-token \n' >token
sm_start --header-timeout 1s --idle-timeout 60s --token-file token
# The token file's surrounding spaces are not part of the token.
req GET / -H 'Authorization: Bearer spaced-token'
expect_status 200
# HEAD /healthz, like GET, needs no token.
req HEAD /healthz
expect_status 200
sm_python <<'EOF' || fail "connection handling"
import time, rawhttp
auth = b"Authorization: Bearer spaced-token\r\n"

# A CRLF after a body is allowed between requests (RFC 9112 2.2): the connection is idle
# afterwards, not "in the middle of a request" that then times out with 408.
s = rawhttp.connect()
r = rawhttp.Reader(s)
s.sendall(b"POST /checkpoint HTTP/1.1\r\nHost: t\r\n" + auth +
          b"Content-Length: 2\r\n\r\n{}\r\n")
status, _, _ = r.response()
assert status == 400, status  # unconfigured
time.sleep(2.5)  # past --header-timeout; the idle timeout is 60 s
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
status, _, body = r.response()
assert status == 200, (status, body)

# HTTP/1.0 with keep-alive is answered with an explicit "Connection: keep-alive" and the
# connection then serves a second request.
s = rawhttp.connect()
r = rawhttp.Reader(s)
for _ in range(2):
    s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = r.response()
    assert status == 200 and headers.get("connection") == "keep-alive", headers
# Without keep-alive, an HTTP/1.0 connection is closed after the answer.
s = rawhttp.connect()
r = rawhttp.Reader(s)
s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
status, headers, _ = r.response()
assert headers.get("connection") == "close", headers
r.until_eof()
