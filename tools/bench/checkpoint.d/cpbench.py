"""The data and the timing clients of tools/bench/checkpoint (see its header comment).

/usr/bin/python3 cpbench.py COMMAND ...; times are CLOCK_MONOTONIC (time.monotonic_ns()).

  make-env DIR FILES MIB SEED  writes FILES files of MIB MiB in all under DIR (which must not
                               exist), sizes log-normal, in nested directories; deterministic
                               for a SEED; prints JSON (files, dirs, bytes, size quantiles)
  make-db DB MIB               builds a SQLite database of about MIB MiB (a table with an
                               index; rows half random hex, half plain text); prints JSON
  poll HOST PORT STOP OUT      GET /healthz on one keep-alive connection, back to back, until
                               the file STOP exists; writes JSON to OUT: n, p50/p99/max in ms,
                               the longest gap between two answers, when the max happened
  events HOST PORT OUT         follows GET /events; writes one line per `operation` event to OUT:
                               "t_arrival_ns kind step" (CLOCK_REALTIME, to compare with
                               `date +%s%N`; flushed at once); ends when killed
  wait-db URL SECS             waits until GET URL shows components.database running with a
                               position in the store and no backlog
  field KEY.PATH               prints a field of the JSON on stdin ("" if absent)
"""
import json
import math
import os
import random
import socket
import sqlite3
import sys
import time
import urllib.request


def make_env(root, files, mib, seed):
    rng = random.Random(seed)
    total = mib * 1024 * 1024
    # Log-normal sizes (median ~ 20 KiB before scaling, a long tail up to tens of MiB), scaled
    # so that they add up to `total` exactly; at least 1 byte each.
    raw = [rng.lognormvariate(math.log(20 * 1024), 1.6) for _ in range(files)]
    scale = total / sum(raw)
    sizes = [max(1, int(s * scale)) for s in raw]
    sizes[sizes.index(max(sizes))] += total - sum(sizes)
    # Directories: 16 top-level, each with 4 subdirectories, some of those with 3 more (and one
    # deep chain), so files sit at depths 1 to 6.
    dirs = [""]
    for a in range(16):
        top = f"d{a:02d}"
        dirs.append(top)
        for b in range(4):
            mid = f"{top}/s{b}"
            dirs.append(mid)
            if (a + b) % 3 == 0:
                for c in range(3):
                    dirs.append(f"{mid}/t{c}")
    dirs.append("deep/a/b/c/d/e")
    os.makedirs(root)
    for d in dirs:
        if d:
            os.makedirs(os.path.join(root, d), exist_ok=True)
    # File contents: slices of one random block (incompressible; nothing here deduplicates).
    block = rng.randbytes(64 * 1024 * 1024)
    offset = 0
    for i, size in enumerate(sizes):
        d = dirs[rng.randrange(len(dirs))]
        path = os.path.join(root, d, f"f{i:05d}.bin")
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, len(block) - offset)
                f.write(memoryview(block)[offset:offset + n])
                left -= n
                offset = (offset + n) % len(block)
                if offset > len(block) - 4096:
                    offset = 0
    ordered = sorted(sizes)
    q = lambda p: ordered[min(len(ordered) - 1, int(p * len(ordered)))]
    print(json.dumps({"files": files, "dirs": len(dirs), "bytes": sum(sizes), "min": ordered[0],
                      "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": ordered[-1]}))


def make_db(path, mib):
    rng = random.Random(6)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL)")
    db.execute("CREATE INDEX items_name ON items(name)")
    target = mib * 1024 * 1024
    i = 0
    while True:
        db.execute("BEGIN")
        for _ in range(2000):
            i += 1
            body = rng.randbytes(200).hex() if i % 2 else ("plain text row %d " % i) * 20
            db.execute("INSERT INTO items(name, body) VALUES (?, ?)", (f"item-{i:09d}", body))
        db.execute("COMMIT")
        pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute(
            "PRAGMA page_size").fetchone()[0]
        if pages * size >= target:
            break
    db.close()
    print(json.dumps({"rows": i, "bytes": os.path.getsize(path)}))


def read_response(sock, buf):
    # Reads one HTTP/1.1 response with a Content-Length; returns (status, rest of the buffer).
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    return int(head.split(b" ", 2)[1]), rest[length:]


def poll(host, port, stop, out):
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    lat = []
    buf = b""
    start = time.monotonic_ns()
    last_answer = start
    max_gap = 0
    worst = worst_at = 0
    bad = 0
    i = 0
    while True:
        # Checking for the stop file costs a stat: every 64 requests.
        if i % 64 == 0 and os.path.exists(stop):
            break
        i += 1
        t0 = time.monotonic_ns()
        sock.sendall(request)
        status, buf = read_response(sock, buf)
        t1 = time.monotonic_ns()
        if status != 200:
            bad += 1
        d = t1 - t0
        if d > worst:
            worst, worst_at = d, t0 - start
        lat.append(d)
        max_gap = max(max_gap, t1 - last_answer)
        last_answer = t1
    sock.close()
    lat.sort()
    n = len(lat)
    pct = lambda p: lat[min(n - 1, math.ceil(p * n) - 1)] / 1e6
    with open(out, "w") as f:
        json.dump({"n": n, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
                   "max_ms": lat[-1] / 1e6, "max_gap_ms": max_gap / 1e6,
                   "seconds": (last_answer - start) / 1e9, "worst_at_s": worst_at / 1e9,
                   "non_200": bad}, f)


def events(host, port, out):
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    buf = b""
    with open(out, "w") as f:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            now = time.time_ns()
            buf += chunk
            while b"\n\n" in buf:
                event, _, buf = buf.partition(b"\n\n")
                kind, data = None, None
                for line in event.split(b"\n"):
                    if line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if kind == "operation" and data:
                    try:
                        d = json.loads(data)
                    except ValueError:
                        continue
                    f.write(f"{now} {d.get('kind')} {d.get('step', '').replace(' ', '_')}\n")
                    f.flush()


def wait_db(url, secs):
    deadline = time.monotonic() + float(secs)
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                last = json.load(r)
            d = last["components"]["database"]
            rep = d.get("replication") or {}
            if d["state"] == "running" and rep.get("position") is not None and \
                    rep.get("backlog_bytes") == 0:
                return 0
        except (OSError, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.05)
    print(json.dumps(last), file=sys.stderr)
    return 1


def field(path):
    v = json.load(sys.stdin)
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-env":
        make_env(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "make-db":
        make_db(args[0], int(args[1]))
    elif cmd == "poll":
        poll(*args)
    elif cmd == "events":
        events(*args)
    elif cmd == "wait-db":
        sys.exit(wait_db(args[0], args[1]))
    elif cmd == "field":
        field(args[0])
    else:
        sys.exit(f"cpbench.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
