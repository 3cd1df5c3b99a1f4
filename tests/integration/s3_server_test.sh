#!/usr/bin/env bash
# tools/s3-test-server: OpenStack Swift with s3api, the real S3 server of the
# tests, answers boto3 (path style, SigV4, region us-east-1): buckets, keys that need encoding,
# byte-exact bodies, listings; rejects a wrong secret (signatures are checked for real); answers
# a conditional PUT 501 without writing; loopback only; stop leaves no process behind.
source "$(dirname "$0")/harness.sh"

S3_SERVER=$HARNESS_DIR/../../tools/s3-test-server
S3_DIR=$TEST_DIR/s3
PY=/usr/bin/python3 # Debian's: boto3 and swift are in its dist-packages, not in pyenv's

# The server is stopped on every exit, pass or fail, before the harness cleans up; on failure
# its logs join the ones the harness prints.
# shellcheck disable=SC2317 # called by the EXIT trap
s3_cleanup() {
  local status=$1 f
  set +e
  if [[ -d $S3_DIR ]]; then
    "$S3_SERVER" stop "$S3_DIR" || status=1
    if ((status != 0)); then
      for f in "$S3_DIR"/log/*.log; do
        [[ -f $f ]] && cp "$f" "$LOG_DIR/swift-$(basename "$f")"
      done
    fi
  fi
  harness_cleanup "$status"
}
trap 's3_cleanup $?' EXIT

[[ -x $S3_SERVER ]] || fail "$S3_SERVER is missing or not executable"
if ! [[ -x /usr/bin/swift-proxy-server && -x /usr/bin/memcached ]] ||
  ! "$PY" -c 'import swift, boto3' 2>/dev/null; then
  fail "swift or python3-boto3 is not installed: run tools/install-deps --test"
fi

"$S3_SERVER" --help | grep -q 'start DIR' || fail "--help does not explain start DIR"
"$S3_SERVER" stop "$TEST_DIR/never-started" || fail "stop of a directory never started failed"

# Start; the command substitution returns only if no server keeps the pipe open.
started=$(date +%s%N)
endpoint=$(timeout -k 5 90 "$S3_SERVER" start "$S3_DIR") || fail "s3-test-server start failed"
log "ready in $((($(date +%s%N) - started) / 1000000)) ms at $endpoint"

[[ -f $S3_DIR/env ]] || fail "no $S3_DIR/env"
env_vars=$(
  # shellcheck disable=SC1091
  source "$S3_DIR/env"
  printf '%s|%s|%s|%s' "$S3_ENDPOINT" "$S3_REGION" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
)
[[ $env_vars == "$endpoint|us-east-1|test:tester|testing" ]] || fail "env file: $env_vars"
[[ $endpoint =~ ^http://127\.0\.0\.1:([0-9]+)$ ]] || fail "endpoint: '$endpoint'"
proxy_port=${BASH_REMATCH[1]}
((proxy_port != 8080)) || fail "the proxy uses 8080, state-manager's port"

mapfile -t server_pids < <(awk '{print $2}' "$S3_DIR/pids")
((${#server_pids[@]} >= 5)) || fail "expected at least 5 recorded PIDs: $(cat "$S3_DIR/pids")"
for pid in "${server_pids[@]}"; do
  pid_running "$pid" || fail "recorded pid $pid is not running"
done

# Every socket the servers listen on is on 127.0.0.1, and their five ports are distinct.
"$PY" - "${server_pids[@]}" <<'EOF' || fail "listening sockets are not loopback-only"
import os, sys
inodes = set()
for pid in sys.argv[1:]:
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
ports = []
for table in ('/proc/net/tcp', '/proc/net/tcp6', '/proc/net/udp', '/proc/net/udp6'):
    for line in open(table).readlines()[1:]:
        f = line.split()
        local, state, inode = f[1], f[3], f[9]
        if inode not in inodes or (table.endswith('tcp') or table.endswith('tcp6')) and state != '0A':
            continue
        addr, port = local.split(':')
        if addr != '0100007F':
            sys.exit(f'{table}: a server listens on {local}')
        ports.append(int(port, 16))
if len(ports) != 5 or len(set(ports)) != 5:
    sys.exit(f'expected 5 distinct listening ports, got {sorted(ports)}')
EOF

# The S3 conversation, with boto3 as a client that knows S3 well.
S3_ENDPOINT=$endpoint "$PY" - <<'EOF' || fail "boto3 against the S3 test server"
import hashlib, os, sys
for name in list(os.environ):  # settings of the calling environment must not interfere
    if name.startswith('AWS_') or name.lower().endswith('_proxy'):
        del os.environ[name]
import boto3, botocore
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = os.environ['S3_ENDPOINT']
config = Config(signature_version='s3v4', s3={'addressing_style': 'path'},
                retries={'max_attempts': 1}, connect_timeout=10, read_timeout=30)

def client(secret='testing', access='test:tester'):
    return boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1',
                        aws_access_key_id=access, aws_secret_access_key=secret, config=config)

def check(condition, message):
    if not condition:
        sys.exit(f'FAIL: {message}')

def error_of(call):
    try:
        call()
    except ClientError as e:
        return e.response['ResponseMetadata']['HTTPStatusCode'], e.response['Error'].get('Code')
    sys.exit(f'FAIL: {call} succeeded')

s3 = client()
bucket = 'test-bucket'
key = 'dir/a key with spaces+plus=equals & ünïcødé ☃ 日本語.bin'
body = bytes(range(256)) * 64 + b'\r\n\x00 end'

s3.create_bucket(Bucket=bucket)
check(bucket in [b['Name'] for b in s3.list_buckets()['Buckets']], 'bucket not listed')
s3.head_bucket(Bucket=bucket)

put = s3.put_object(Bucket=bucket, Key=key, Body=body)
check(put['ETag'].strip('"') == hashlib.md5(body).hexdigest(), f'ETag {put["ETag"]}')

got = s3.get_object(Bucket=bucket, Key=key)
check(got['Body'].read() == body, 'the body read back differs')
check(got['ContentLength'] == len(body), f'ContentLength {got["ContentLength"]}')

listed = s3.list_objects_v2(Bucket=bucket, Prefix='dir/')
check([(o['Key'], o['Size']) for o in listed.get('Contents', [])] == [(key, len(body))],
      f'listing: {listed.get("Contents")}')
listed = s3.list_objects(Bucket=bucket)
check([o['Key'] for o in listed.get('Contents', [])] == [key], f'v1 listing: {listed}')

# Signatures are checked: a wrong secret or an unknown access key is refused, and writes nothing.
status, code = error_of(lambda: client(secret='not-the-secret').get_object(Bucket=bucket, Key=key))
check((status, code) == (403, 'SignatureDoesNotMatch'), f'wrong secret: {status} {code}')
status, code = error_of(lambda: client(secret='not-the-secret').put_object(
    Bucket=bucket, Key='intruder', Body=b'x'))
check(status == 403, f'wrong secret, PUT: {status} {code}')
status, code = error_of(lambda: client(access='test:nobody').list_objects_v2(Bucket=bucket))
check(status == 403, f'unknown access key: {status} {code}')
check(error_of(lambda: s3.head_object(Bucket=bucket, Key='intruder'))[0] == 404,
      'a PUT with a wrong secret wrote the object')

# A conditional PUT is not implemented: 501, and the object is left as it was. boto3 1.26 has no
# IfNoneMatch parameter: the header is added before signing, so it is signed like any other.
conditional = client()
def if_none_match(request, **kwargs):
    request.headers['If-None-Match'] = '*'
conditional.meta.events.register('before-sign.s3.PutObject', if_none_match)
status, code = error_of(lambda: conditional.put_object(Bucket=bucket, Key=key, Body=b'other'))
check((status, code) == (501, 'NotImplemented'), f'conditional PUT: {status} {code}')
check(s3.get_object(Bucket=bucket, Key=key)['Body'].read() == body,
      'a conditional PUT answered 501 changed the object')

s3.delete_object(Bucket=bucket, Key=key)
check('Contents' not in s3.list_objects_v2(Bucket=bucket), 'deleted object still listed')
s3.delete_bucket(Bucket=bucket)
EOF

# Stop: nothing it started survives, and a second stop is harmless.
"$S3_SERVER" stop "$S3_DIR" || fail "s3-test-server stop failed"
for pid in "${server_pids[@]}"; do
  ! pid_running "$pid" || fail "pid $pid survived stop: $(ps -o pid,cmd -p "$pid" | tail -n1)"
done
"$S3_SERVER" stop "$S3_DIR" || fail "a second stop failed"
curl -s -o /dev/null --max-time 2 "$endpoint/healthcheck" && fail "the proxy still answers after stop"
exit 0
