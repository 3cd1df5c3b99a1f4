#!/usr/bin/env python3
"""A stand-in for state-manager, to test tools/bench/fs's state-manager path (configure, wait
for the mount, stop, empty the cache, restart on the saved configuration) before the filesystem
component exists:

  STATE_MANAGER_BIN=tools/bench/fs.d/fake-state-manager.py BENCH_FS_SM_FSTYPE=fuse.rclone \\
    tools/bench/fs --only local,state-manager --size 8 --files 20 --runs 2

It takes `--listen 127.0.0.1:0` like state-manager and logs 'listening address=…'; POST /config
writes tmp/config.json and mounts env_dir with `rclone mount` of a local directory
(data/fake-store), its VFS cache in data/filesystem/cache; at start it mounts again from
tmp/config.json; SIGTERM unmounts and exits. GET / shows configured and a staging of 0 bytes.
Not a benchmark of anything.
"""
import http.server
import json
import os
import signal
import subprocess
import sys
import time

rclone = None
env_dir = None


def mount(config):
    global rclone, env_dir
    env_dir = config["storage"]["env_dir"]
    os.makedirs(env_dir, exist_ok=True)
    os.makedirs("data/fake-store", exist_ok=True)
    rclone = subprocess.Popen(["rclone", "mount", os.path.abspath("data/fake-store"), env_dir,
                               "--vfs-cache-mode", "writes", "--vfs-write-back", "0s", "--cache-dir", os.path.abspath("data/filesystem/cache")])


def stop(*_):
    # Like state-manager, nothing written stays behind in the cache: wait until every file of
    # the mount is in the store (the uploads follow each close: --vfs-write-back 0s).
    deadline = time.monotonic() + 60
    while env_dir and time.monotonic() < deadline and pending():
        time.sleep(0.1)
    if env_dir:
        subprocess.call(["fusermount", "-u", env_dir])
    if rclone:
        rclone.terminate()
        rclone.wait()
    sys.exit(0)


def pending():
    """True while a file of the mount differs in size from its copy in the store."""
    for top, _, names in os.walk(env_dir):
        for name in names:
            path = os.path.join(top, name)
            stored = os.path.join("data/fake-store", os.path.relpath(path, env_dir))
            try:
                if os.path.getsize(path) != os.path.getsize(stored):
                    return True
            except OSError:
                return True
    return False


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200, {"configured": rclone is not None,
                          "components": {"filesystem": {"staging": {"bytes": 0, "blocks": 0}}}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/config" or rclone is not None:
            self.answer(400, {"error": "no"})
            return
        config = json.loads(body)
        os.makedirs("tmp", exist_ok=True)
        with open("tmp/config.json", "wb") as f:
            f.write(body)
        mount(config)
        self.answer(200, {})


def main():
    signal.signal(signal.SIGTERM, stop)
    if os.path.exists("tmp/config.json"):
        with open("tmp/config.json") as f:
            mount(json.load(f))
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print("%s info  listening address=127.0.0.1:%d" % (time.strftime("%FT%T"), server.server_port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
