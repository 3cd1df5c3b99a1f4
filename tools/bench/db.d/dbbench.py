"""The application side and the store side of tools/bench/db (see its header comment).

/usr/bin/python3 dbbench.py COMMAND ...; times are CLOCK_MONOTONIC (time.monotonic(), the same
clock in every process of the machine), printed as seconds with 6 decimals.

  burst DB N                 N transactions (one INSERT each) as fast as possible; prints JSON
                             (txn/s, commit latencies, the WAL's size before closing, where
                             the last commit ends)
  caught-up URL INDEX0 BURST_JSON SECS  waits until the store has the burst's last commit;
                             prints the seconds since that commit
  steady DB RATE SECONDS OUT commits RATE/s for SECONDS on a fixed schedule; writes one line per
                             commit to OUT: "t salt1 mxframe page_size"
  poll PREFIX OUT STOP       lists PREFIX every ~20 ms until the file STOP exists; writes one line
                             per new key to OUT: "t_seen t_sent_of_previous_list key"
  lag COMMITS SEEN           maps commits to the segments that hold them; prints JSON
  make-db DB MIB             builds a database of about MIB MiB (not in WAL mode); prints JSON
  wait-status URL EXPR SECS  polls GET URL until EXPR (Python, `d` = components.database) holds
  status URL                 prints components.database of GET URL as JSON
  bucket NAME                creates the bucket
  objects PREFIX             prints JSON: count, bytes, snapshot keys and sizes, segment count
  download KEY FILE          times a boto3 download of KEY (after the import); prints JSON
The store's settings come from S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET.
"""
import json
import os
import sqlite3
import statistics
import struct
import sys
import time
import urllib.request


def connect(path):
    # A persistent connection as any application sharing the database: WAL mode,
    # synchronous=NORMAL (the setting WAL is meant for, and Litestream's recommendation: a
    # commit appends to the WAL without fsync; checkpoints fsync), busy timeout 5000 ms.
    # Autocommit: each INSERT is its own transaction.
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise SystemExit(f"{path}: journal_mode is {mode}, not wal")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return db


def row_value(i):
    # A small row: about 100 bytes, a little different each time.
    return f"row {i:08d} " + "x" * 60 + f" {i * 2654435761 % 4294967296:010d}"


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def burst(path, n):
    db = connect(path)
    shm = os.open(path + "-shm", os.O_RDONLY)
    salt_start, _ = shm_header(shm)
    insert = "INSERT INTO t(v) VALUES (?)"
    values = [row_value(i) for i in range(n)]
    latencies = []
    clock = time.monotonic
    start = clock()
    previous = start
    for v in values:
        db.execute(insert, (v,))
        now = clock()
        latencies.append(now - previous)
        previous = now
    elapsed = previous - start
    # Where the last commit ends: for tools/bench/db's catch-up time (caught-up, below).
    salt_end, mxframe = shm_header(shm)
    os.close(shm)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    count = db.execute("SELECT count(*) FROM t").fetchone()[0]
    # The WAL as the burst left it (closing the last connection checkpoints and deletes it).
    wal_bytes = os.path.getsize(path + "-wal")
    db.close()
    if count < n:
        raise SystemExit(f"{path}: {count} rows after {n} inserts")
    print(json.dumps({
        "n": n, "seconds": elapsed, "txn_per_s": n / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * max(latencies), "wal_bytes": wal_bytes, "t_end": previous,
        "salt_start": salt_start, "salt_end": salt_end,
        "end": 32 + mxframe * (24 + page_size),
    }))


def caught_up(url, index0, burst_json, seconds):
    # Polls GET / every ~10 ms until the store's position (the last segment uploaded) covers the
    # burst's last commit: its WAL index is index0 (the shadow's index before the burst) plus
    # the restarts of the log during the burst (salt-1's increments), its end offset is known.
    # A later index also covers it: state-manager ships everything before it restarts the log.
    # Prints the seconds from the last commit to the first answer that showed it.
    b = json.loads(burst_json)
    target = int(index0) + ((b["salt_end"] - b["salt_start"]) % 2**32)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        try:
            r = database_of(url)["replication"]
            p = r["position"]
            if p and r["backlog_bytes"] == 0 and (
                    p["wal_index"] > target or
                    (p["wal_index"] == target and p["offset"] >= b["end"])):
                print(f"{time.monotonic() - b['t_end']:.3f}")
                return
        except Exception:  # noqa: BLE001 - not answering for a moment
            pass
        time.sleep(0.01)
    raise SystemExit(f"the store did not catch up with the burst within {seconds} s")


def shm_header(fd):
    # The WAL-index header (first copy) in DB-shm: mxFrame (native u32 at 16) is the last valid
    # frame of the log; aSalt (at 32) is copied from the WAL header, salt-1 big-endian, and
    # SQLite adds 1 to salt-1 each time it restarts the log.
    header = os.pread(fd, 48, 0)
    mxframe = struct.unpack_from("=I", header, 16)[0]
    salt1 = struct.unpack_from(">I", header, 32)[0]
    return salt1, mxframe


def steady(path, rate, seconds, out):
    db = connect(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    shm = os.open(path + "-shm", os.O_RDONLY)
    insert = "INSERT INTO t(v) VALUES (?)"
    n = int(rate * seconds)
    lines = []
    clock = time.monotonic
    start = clock() + 0.05
    for i in range(n):
        due = start + i / rate
        wait = due - clock()
        if wait > 0:
            time.sleep(wait)
        db.execute(insert, (row_value(i),))
        t = clock()  # the commit returned: the application considers it done
        salt1, mxframe = shm_header(shm)
        lines.append(f"{t:.6f} {salt1} {mxframe} {page_size}\n")
    os.close(shm)
    db.close()
    with open(out, "w") as f:
        f.writelines(lines)


def s3_client():
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["S3_REGION"],
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def poll(prefix, out, stop):
    # Lists PREFIX (…/db/) from just after the last key seen: keys are never overwritten and a
    # generation's WAL keys grow in key order (fixed-width hex), so each new segment shows up in
    # the first list that runs after it lands. A key's t_seen is when the answer came back;
    # it landed after the previous list was sent.
    s3 = s3_client()
    bucket = os.environ["S3_BUCKET"]
    last_key = ""
    previous_sent = time.monotonic()
    with open(out, "w", buffering=1) as f:
        while not os.path.exists(stop):
            sent = time.monotonic()
            args = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if last_key:
                args["StartAfter"] = last_key
            try:
                answer = s3.list_objects_v2(**args)
            except Exception as e:  # noqa: BLE001 - a failed list is retried, and said
                print(f"poll: {e}", file=sys.stderr)
                time.sleep(0.1)
                continue
            seen = time.monotonic()
            for item in answer.get("Contents", []):
                f.write(f"{seen:.6f} {previous_sent:.6f} {item['Key']}\n")
                last_key = item["Key"]
            f.write(f"# list {sent:.6f} {seen:.6f}\n")
            previous_sent = sent
            pause = 0.02 - (time.monotonic() - sent)
            if pause > 0:
                time.sleep(pause)


def parse_segment(key):
    # …db/<generation>/wal/<walidx:16>/<start:16>-<end:16>.wal[.zst]
    parts = key.split("/")
    if len(parts) < 5 or parts[-3] != "wal":
        return None
    name = parts[-1]
    if len(name) < 37 or name[16] != "-" or not name[33:].startswith(".wal"):
        return None
    return parts[-4], int(parts[-2], 16), int(name[:16], 16), int(name[17:33], 16)


def lag(commits_file, seen_file):
    commits = []
    with open(commits_file) as f:
        for line in f:
            t, salt1, mxframe, page_size = line.split()
            commits.append((float(t), int(salt1), int(mxframe), int(page_size)))
    segments, lists = [], []  # (t_seen, t_floor, generation, walidx, start, end)
    with open(seen_file) as f:
        for line in f:
            if line.startswith("# list "):
                _, _, sent, seen = line.split()
                lists.append((float(sent), float(seen)))
                continue
            t_seen, t_floor, key = line.split(maxsplit=2)
            parsed = parse_segment(key.strip())
            if parsed:
                segments.append((float(t_seen), float(t_floor)) + parsed)
    result = {"commits": len(commits), "lists": len(lists)}
    if not commits or not segments:
        result["error"] = "no commits or no segments seen"
        print(json.dumps(result))
        return
    generations = sorted({s[2] for s in segments})
    result["generations"] = len(generations)
    generation = generations[-1]
    mine = [s for s in segments if s[2] == generation]
    # Which WAL index each commit's log is: SQLite adds 1 to salt-1 at each restart of the log,
    # and the replica starts a WAL index at each restart; anchored at the end, when the writer
    # has stopped and everything is shipped: its last commit's log is the newest index.
    last_salt = commits[-1][1]
    last_index = max(s[3] for s in mine)
    # The newest index in the store must hold the last commit (the caller waited for that).
    unmapped = 0
    lags, floors = [], []
    for t, salt1, mxframe, page_size in commits:
        walidx = last_index - ((last_salt - salt1) % 2**32)
        end = 32 + mxframe * (24 + page_size)
        hits = [s for s in mine if (s[3] == walidx and s[5] >= end) or s[3] > walidx]
        if not hits:
            unmapped += 1
            continue
        first = min(hits, key=lambda s: s[0])
        lags.append(first[0] - t)
        floors.append(max(0.0, first[1] - t))
    result["unmapped"] = unmapped
    # A check of the offsets: the newest index's last segment ends where the last commit does
    # (nothing else writes to the database while the writer is idle, the caller waited).
    last_end = 32 + commits[-1][2] * (24 + commits[-1][3])
    stored_end = max(s[5] for s in mine if s[3] == last_index)
    if stored_end != last_end:
        result["error"] = (f"the last commit ends at byte {last_end} of WAL index {last_index},"
                           f" the store's last segment at {stored_end}")
    result["indexes"] = sorted({s[3] for s in mine})
    result["segments"] = len(mine)
    if len(generations) > 1:
        result["error"] = "; ".join(filter(None, [
            result.get("error"), f"{len(generations)} generations during the run: only the last"
            " is used"]))
    periods = [b[1] - a[1] for a, b in zip(lists, lists[1:])]
    round_trips = [seen - sent for sent, seen in lists]
    result["list_period_ms"] = 1000 * statistics.median(periods) if periods else None
    result["list_rtt_ms"] = 1000 * statistics.median(round_trips) if round_trips else None
    if lags:
        result.update({
            "n": len(lags),
            "p50_ms": 1000 * percentile(lags, 50), "p99_ms": 1000 * percentile(lags, 99),
            "max_ms": 1000 * max(lags), "min_ms": 1000 * min(lags),
            "floor_p50_ms": 1000 * percentile(floors, 50),
            "floor_p99_ms": 1000 * percentile(floors, 99),
        })
    print(json.dumps(result))


def make_db(path, mib):
    # Rows of an ordinary table with an index: a text key, some text, a number; about half of
    # each row's bytes compress well, as in most real databases.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, k TEXT NOT NULL, body TEXT NOT NULL,"
               " n INTEGER NOT NULL)")
    db.execute("CREATE INDEX items_k ON items(k)")
    target = mib << 20
    batch = 20000
    rows = 0
    while True:
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute(
            "PRAGMA page_size").fetchone()[0]
        if size >= target:
            break
        db.execute("BEGIN")
        db.execute(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
            "INSERT INTO items(k, body, n) SELECT lower(hex(randomblob(8))), "
            "'item ' || (? + i) || ': ' || lower(hex(randomblob(48))) || "
            "' the quick brown fox jumps over the lazy dog, again and again', "
            "abs(random()) % 1000000 FROM s", (batch, rows))
        db.execute("COMMIT")
        rows += batch
    count = db.execute("SELECT count(*) FROM items").fetchone()[0]
    db.close()
    print(json.dumps({"rows": count, "bytes": os.path.getsize(path)}))


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def database_of(url):
    return get_json(url).get("components", {}).get("database") or {}


def wait_status(url, expr, seconds):
    end = time.monotonic() + float(seconds)
    d = {}
    while time.monotonic() < end:
        try:
            d = database_of(url)
            if eval(expr, {}, {"d": d}):  # noqa: S307 - the script's own expressions
                print(json.dumps(d))
                return
        except Exception:  # noqa: BLE001 - not answering yet, or a field missing yet
            pass
        time.sleep(0.05)
    print(json.dumps(d))
    raise SystemExit(f"waited {seconds} s for {expr}")


def objects(prefix):
    s3 = s3_client()
    bucket = os.environ["S3_BUCKET"]
    count = size = segments = 0
    snapshots = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
            if "/snapshot/" in item["Key"]:
                snapshots[item["Key"]] = item["Size"]
            elif "/wal/" in item["Key"]:
                segments += 1
    print(json.dumps({"count": count, "bytes": size, "snapshots": snapshots,
                      "segments": segments}))


def download(key, to):
    s3 = s3_client()
    bucket = os.environ["S3_BUCKET"]
    start = time.monotonic()
    s3.download_file(bucket, key, to)
    elapsed = time.monotonic() - start
    print(json.dumps({"seconds": elapsed, "bytes": os.path.getsize(to)}))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "burst":
        burst(args[0], int(args[1]))
    elif command == "caught-up":
        caught_up(args[0], args[1], args[2], args[3])
    elif command == "steady":
        steady(args[0], float(args[1]), float(args[2]), args[3])
    elif command == "poll":
        poll(args[0], args[1], args[2])
    elif command == "lag":
        lag(args[0], args[1])
    elif command == "make-db":
        make_db(args[0], int(args[1]))
    elif command == "wait-status":
        wait_status(args[0], args[1], args[2])
    elif command == "status":
        print(json.dumps(database_of(args[0])))
    elif command == "bucket":
        s3_client().create_bucket(Bucket=args[0])
    elif command == "objects":
        objects(args[0])
    elif command == "download":
        download(args[0], args[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
