#!/usr/bin/env python3
"""Measures how long state-manager takes from exec to its first answered GET /.

Each run picks a free loopback port and a fresh working directory, records a monotonic time,
spawns the binary, and polls the port with raw sockets (no HTTP library, so the poller's own
cost stays small and known) until a request is answered with status 200. The process is then
stopped with SIGTERM and waited for. The binary runs on core 0 and the poller on core 1, so
that they do not take turns on one CPU.

Per-run figures go to stderr; the last line on stdout is the summary the bench script reads:
    runs=N median_ms=X max_ms=Y stop_median_ms=Z
Exit status 1 if any run failed to answer within the timeout.
"""

import argparse
import errno
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
POLL_SLEEP_S = 200e-6


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_of_one_request(port: int) -> int | None:
    """Returns the status code of GET /, or None if nothing answers on the port yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(REQUEST)
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(256)
                if not chunk:
                    return None
                head += chunk
    except OSError as e:
        # Refused: not listening yet. Reset or timeout: listening but not serving yet.
        if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE) or isinstance(
            e, socket.timeout
        ):
            return None
        raise
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    return int(parts[1])


def one_run(binary: str, extra_args: list[str], timeout_s: float) -> tuple[float, float]:
    """Returns (ms from spawn to first 200, ms from SIGTERM to exit)."""
    workdir = tempfile.mkdtemp(prefix="bench-first-answer.")
    port = free_port()
    log_path = os.path.join(workdir, "state-manager.log")
    proc = None
    try:
        with open(log_path, "wb") as log:
            # The child inherits the affinity in force at spawn time: core 0 for it, then core 1
            # for this poller. A preexec_fn would force a full fork of the interpreter instead.
            os.sched_setaffinity(0, {0})
            started = time.monotonic_ns()
            proc = subprocess.Popen(
                [binary, "--listen", f"127.0.0.1:{port}", *extra_args],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            os.sched_setaffinity(0, {1})
            deadline = started + int(timeout_s * 1e9)
            while True:
                status = status_of_one_request(port)
                now = time.monotonic_ns()
                if status == 200:
                    answered = now
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with status {proc.returncode} before answering")
                if now > deadline:
                    raise RuntimeError(f"no 200 within {timeout_s} s (last status {status})")
                time.sleep(POLL_SLEEP_S)
            # Popen.wait(timeout) polls with growing sleeps; a pidfd wakes us when it exits.
            pidfd = os.pidfd_open(proc.pid)
            try:
                stop_sent = time.monotonic_ns()
                proc.send_signal(signal.SIGTERM)
                readable, _, _ = select.select([pidfd], [], [], 10.0)
                stopped = time.monotonic_ns()
            finally:
                os.close(pidfd)
            if not readable:
                raise RuntimeError("still running 10 s after SIGTERM")
            proc.wait()
            if proc.returncode != 0:
                print(f"  note: exit status {proc.returncode} after SIGTERM", file=sys.stderr)
            return (answered - started) / 1e6, (stopped - stop_sent) / 1e6
    except Exception:
        with open(log_path, "rb") as log:
            sys.stderr.write(log.read().decode(errors="replace")[-2000:])
        raise
    finally:
        # Only the process this run started, by its pid.
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per run")
    parser.add_argument("extra_args", nargs="*", help="after --: more arguments for the binary")
    args = parser.parse_args()

    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        print("need cores 0 and 1", file=sys.stderr)
        return 1
    # The binary runs in a fresh directory: a relative path would no longer name it.
    binary = os.path.abspath(args.binary)
    starts, stops = [], []
    for i in range(args.runs):
        try:
            start_ms, stop_ms = one_run(binary, args.extra_args, args.timeout)
        except Exception as e:
            print(f"run {i + 1}: failed: {e}", file=sys.stderr)
            return 1
        starts.append(start_ms)
        stops.append(stop_ms)
        print(f"run {i + 1:2}: first 200 after {start_ms:7.2f} ms, "
              f"SIGTERM to exit {stop_ms:7.2f} ms", file=sys.stderr)
    print(f"runs={len(starts)} median_ms={statistics.median(starts):.2f} "
          f"max_ms={max(starts):.2f} stop_median_ms={statistics.median(stops):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
