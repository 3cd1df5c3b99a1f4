#!/usr/bin/env bash
# `state-manager checkpoint create|restore|list|delete` against a running instance: the
# summaries, --json, a restore that brings a changed file back, the server's errors (exit 1 with
# its message), bad usage (exit 2), an unreachable URL, and the bearer token from --token-file.
source "$(dirname "$0")/harness.sh"

# expect_cli_exit CODE: the last run_cli ended with CODE.
expect_cli_exit() {
  ((CLI_EXIT == $1)) ||
    fail "expected exit $1, got $CLI_EXIT; stdout: $(cat "$CLI_OUT"); stderr: $(cat "$CLI_ERR")"
}
# expect_out REGEX / expect_err REGEX: the last run_cli's stdout / stderr matches the ERE.
expect_out() { grep -Eq "$1" "$CLI_OUT" || fail "stdout does not match /$1/: $(cat "$CLI_OUT")"; }
expect_err() { grep -Eq "$1" "$CLI_ERR" || fail "stderr does not match /$1/: $(cat "$CLI_ERR")"; }
# expect_out_json PY_EXPR: the last run_cli's stdout is JSON where PY_EXPR (of j) is true.
expect_out_json() {
  BODY_FILE=$CLI_OUT BODY=$(cat "$CLI_OUT") LAST_REQ="the CLI's --json" expect_json "$1"
}

sm_start -- sleep 1000
req POST /config -d "$(file_config)"
expect_status 200
mkdir -p data/env
echo "before" >data/env/test.txt

# Create with an id: the summary line, and nothing on stderr (not a terminal: no progress bar).
run_cli checkpoint create test1 --url "$SM_URL"
expect_cli_exit 0
expect_out '^checkpoint test1: 1 file, [0-9.]+ [KMG]?i?B, no database, [0-9]+ ms$'
[[ ! -s $CLI_ERR ]] || fail "stderr is not empty without a terminal: $(cat "$CLI_ERR")"
[[ -d tmp/checkpoints/test1 ]] || fail "tmp/checkpoints/test1 is missing"

# Create without an id, the URL from the environment: the server picks v1.
echo "after" >data/env/test.txt
STATE_MANAGER_URL=$SM_URL run_cli checkpoint create
expect_cli_exit 0
expect_out '^checkpoint v1: '

# --json prints the server's answer as it is.
run_cli checkpoint create --json --url "$SM_URL"
expect_cli_exit 0
expect_out_json 'j["id"] == "v2" and "manifest" in j'

# List: a header and one row a checkpoint, oldest first.
run_cli checkpoint list --url "$SM_URL"
expect_cli_exit 0
expect_out '^ID +CREATED +WHERE +FILES +SIZE +DATABASE$'
[[ $(tail -n +2 "$CLI_OUT" | awk '{print $1}' | tr '\n' ' ') == "test1 v1 v2 " ]] ||
  fail "list does not show test1 v1 v2: $(cat "$CLI_OUT")"
run_cli checkpoint list --json --url "$SM_URL"
expect_cli_exit 0
expect_out_json 'j["count"] == 3'

# Restore test1: the file changed after it comes back.
echo "changed" >data/env/test.txt
run_cli checkpoint restore test1 --url "$SM_URL"
expect_cli_exit 0
expect_out '^restored test1 in [0-9]+ ms$'
[[ $(cat data/env/test.txt) == before ]] || fail "test.txt not restored: $(cat data/env/test.txt)"

# Delete.
run_cli checkpoint delete v1 --url "$SM_URL"
expect_cli_exit 0
expect_out '^deleted v1'
[[ ! -e tmp/checkpoints/v1 ]] || fail "v1 is still there"
req GET /checkpoints
expect_json '[c["id"] for c in j["checkpoints"]] == ["test1", "v2"]'

# The server's errors: exit 1, its message on one line of stderr.
run_cli checkpoint restore nosuch --url "$SM_URL"
expect_cli_exit 1
expect_err 'no such checkpoint'
(($(wc -l <"$CLI_ERR") == 1)) || fail "the error is not one line: $(cat "$CLI_ERR")"
run_cli checkpoint delete nosuch --url "$SM_URL"
expect_cli_exit 1
expect_err 'no such checkpoint'
run_cli checkpoint create test1 --url "$SM_URL"
expect_cli_exit 1
expect_err '409'
# An id that is not a path segment reaches the server intact, and the server refuses it.
run_cli checkpoint delete 'a/b c' --url "$SM_URL"
expect_cli_exit 1
expect_err 'invalid checkpoint id'

# Bad usage: exit 2.
for args in "" "frob" "restore" "delete" "list extra" "create a b" "list --nosuch" "list --url" \
  "list --url https://127.0.0.1:1" "list --url ftp://x"; do
  # shellcheck disable=SC2086
  run_cli checkpoint $args
  ((CLI_EXIT == 2)) || fail "checkpoint $args: expected exit 2, got $CLI_EXIT: $(cat "$CLI_ERR")"
done
run_cli checkpoint --help
expect_cli_exit 0
expect_out '^Usage: state-manager checkpoint create'

# Nothing listening: exit 1, naming the URL. The port is one a listener held and closed.
closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
run_cli checkpoint list --url "http://127.0.0.1:$closed_port"
expect_cli_exit 1
expect_err "http://127.0.0.1:$closed_port"
sm_stop

# The progress bar: drawn on stderr when it is a terminal, from GET / polled while the request
# is in flight. A stand-in server makes the wait long and the progress known.
cat >fake_server.py <<'EOF'
import http.server, json, time
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.answer({"operation": {"kind": "checkpoint", "id": "slow", "step": "snapshot",
                                   "done_bytes": 50, "total_bytes": 100}})
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.8)
        self.answer({"id": "slow", "manifest": {"database": None, "steps_ms": {"total": 800},
                                                "mount": {"files": 2, "bytes": 2048}}})
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
python3 fake_server.py >fake_port 2>"$LOG_DIR/fake_server.log" &
STARTED_PIDS+=($!)
wait_until "the stand-in server" test -s fake_port
FAKE_URL=http://127.0.0.1:$(cat fake_port)
run_cli checkpoint create slow --url "$FAKE_URL"
expect_cli_exit 0
expect_out '^checkpoint slow: 2 files, 2 KiB, no database, 800 ms$'
[[ ! -s $CLI_ERR ]] || fail "a progress bar without a terminal: $(cat "$CLI_ERR")"
python3 - "$STATE_MANAGER_BIN" "$FAKE_URL" >tty.out <<'EOF' || fail "in a terminal: $(cat -v tty.out)"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "checkpoint", "create", "slow", "--url", sys.argv[2]])
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the child closed the terminal
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
print(out.decode(errors="replace"))
sys.exit(0 if os.waitstatus_to_exitcode(status) == 0 else 1)
EOF
grep -q 'checkpoint slow: snapshot \[.*\]  50%  50 B / 100 B' tty.out ||
  fail "no progress bar: $(cat -v tty.out)"
grep -q 'checkpoint slow: 2 files' tty.out || fail "no summary under a terminal: $(cat -v tty.out)"

# With a token: --token-file and STATE_MANAGER_TOKEN work; without one, 401 and exit 1.
mkdir second
cd second || fail "cannot enter second/"
printf '  s3cret-token\n' >token
sm_start --token-file token -- sleep 1000
run_cli checkpoint list --url "$SM_URL" --token-file token
expect_cli_exit 0
expect_out '^no checkpoints$'
STATE_MANAGER_TOKEN=s3cret-token run_cli checkpoint list --url "$SM_URL"
expect_cli_exit 0
run_cli checkpoint list --url "$SM_URL"
expect_cli_exit 1
expect_err 'unauthorized.*401'
printf 'wrong\n' >wrong-token
run_cli checkpoint list --url "$SM_URL" --token-file wrong-token
expect_cli_exit 1
expect_err '401'
run_cli checkpoint list --url "$SM_URL" --token-file missing-token
expect_cli_exit 1
expect_err 'missing-token'
sm_stop
log "ok"
