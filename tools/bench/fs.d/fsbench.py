"""Helpers of tools/bench/fs (Python 3 standard library only).

  create DIR N SIZE        makes DIR, then creates N files of SIZE bytes in it, each opened,
                           written and closed; prints the milliseconds from the first open to
                           the last close (the interpreter's start is not counted)
  tree DIR N DIRS SIZE     N files of SIZE bytes spread over DIRS subdirectories of DIR (DIR
                           itself if DIRS is 0); prints the milliseconds it took
  wait-mount PATH FSTYPE SECONDS
                           waits until PATH is a mount point of type FSTYPE (0) or the time
                           is up (1)
  wait-unmounted PATH SECONDS
                           waits until PATH is no longer a mount point
  field NAME               prints field NAME (dotted) of the JSON object on stdin, empty if absent
"""
import json
import os
import sys
import time


def mounts():
    """(mount point, fstype) pairs from /proc/self/mountinfo (octal escapes decoded)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].encode().decode("unicode_escape")
            out.append((point, right.split()[0]))
    return out


def mounted_type(path):
    path = os.path.realpath(path)
    found = None
    for point, fstype in mounts():
        if point == path:
            found = fstype  # the last one wins: the top of a stack of mounts
    return found


def create(directory, count, size):
    os.makedirs(directory, exist_ok=True)
    data = os.urandom(size)
    start = time.monotonic_ns()
    for i in range(count):
        fd = os.open(os.path.join(directory, "f%06d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            done = 0
            while done < size:
                done += os.write(fd, data[done:])
        finally:
            os.close(fd)
    return (time.monotonic_ns() - start) / 1e6


def tree(directory, count, dirs, size):
    data = os.urandom(size)
    start = time.monotonic_ns()
    subdirs = [os.path.join(directory, "d%03d" % d) for d in range(dirs)] or [directory]
    for d in subdirs:
        os.makedirs(d, exist_ok=True)
    for i in range(count):
        d = subdirs[i % len(subdirs)]
        with open(os.path.join(d, "f%06d" % i), "wb") as f:
            f.write(data)
    return (time.monotonic_ns() - start) / 1e6


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "create" and len(argv) == 5:
        print("%.1f" % create(argv[2], int(argv[3]), int(argv[4])))
    elif cmd == "tree" and len(argv) == 6:
        print("%.1f" % tree(argv[2], int(argv[3]), int(argv[4]), int(argv[5])))
    elif cmd == "wait-mount" and len(argv) == 5:
        deadline = time.monotonic() + float(argv[4])
        while mounted_type(argv[2]) != argv[3]:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
    elif cmd == "wait-unmounted" and len(argv) == 4:
        deadline = time.monotonic() + float(argv[3])
        while mounted_type(argv[2]) is not None:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
    elif cmd == "field" and len(argv) == 3:
        try:
            value = json.load(sys.stdin)
        except ValueError:
            value = None
        for key in argv[2].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        print("" if value is None else value)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
