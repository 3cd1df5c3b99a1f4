#!/usr/bin/env python3
"""Random-operation verifier of a filesystem: many random operations on one file, every read
checked against an in-memory model of its contents (Python 3 standard library only).

  fs_verify.py DIR [--seed S] [--ops N] [--max-size SIZE] [--name FILE]
               [--save STATE] [--check STATE] [--self-test] [--quiet]

On DIR/FILE (default fs_verify.dat), from --seed (default 1), --ops operations (default 5000;
0 after --check unless given) drawn at random: pwrite at random offsets and lengths (many of
them across 4 MiB block and 64 MiB chunk boundaries, and past the end of the file, leaving
holes), ftruncate up and down, pread checks (and fstat's size), mmap reads and MAP_SHARED mmap
writes followed by msync, fsync now and then, and the file closed and reopened between batches
(sometimes followed by a check of the whole file). The model is a bytearray; every byte read is
compared with it. The file never grows past --max-size (default 80 MiB, so that the 64 MiB
chunk boundary is crossed; suffixes K, M, G).

Across a remount:
  --save STATE    after the operations: fsync, close, and write the model (with the seed and
                  the number of operations done) to STATE
  --check STATE   first: check that DIR/FILE equals the model saved in STATE (size and every
                  byte), then go on with --ops more operations (the random sequence continues
                  from the saved position), which --save may save again
  --self-test     proves that the checks catch a corruption: runs operations in DIR, flips one
                  byte of the file through a second descriptor behind the model's back, and
                  expects the next check to report exactly that offset; the same through
                  --save/--check. Exits 0 when every corruption was caught.

Exit status: 0 when every check passed; 1 at the first mismatch or failed operation, described
on stderr (operation, offset, expected and actual bytes); 2 for a usage error.
The same seed, operation count and --max-size give the same operations on any filesystem.
"""
import argparse
import hashlib
import json
import mmap
import os
import random
import sys
import time

BLOCK = 4 << 20  # state-manager's default block size
CHUNK = 64 << 20  # its chunk size: slices never cross one
PAGE = mmap.ALLOCATIONGRANULARITY
STATE_MAGIC = "fs_verify-state-1"


class Mismatch(Exception):
    pass


def parse_size(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = t[-1:] if t[-1:] in units and t[-1:] != "" else ""
    try:
        value = int(t[: len(t) - len(suffix)]) * units[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("not a positive size: %r" % text)
    return value


def hexdump(data):
    return data.hex(" ") if data else "(nothing)"


def compare(what, offset, expected, got):
    """Raises Mismatch naming the first differing byte of two buffers read at OFFSET."""
    if expected == got:
        return
    n = min(len(expected), len(got))
    i = next((k for k in range(n) if expected[k] != got[k]), n)
    lo = max(0, i - 4)
    raise Mismatch(
        "%s: first difference at file offset %d (%d bytes expected, %d read)\n"
        "  expected from offset %d: %s\n"
        "  got      from offset %d: %s"
        % (what, offset + i, len(expected), len(got), offset + lo,
           hexdump(bytes(expected[lo:i + 12])), offset + lo, hexdump(bytes(got[lo:i + 12]))))


def read_exactly(fd, length, offset):
    """pread until LENGTH bytes or the end of the file (a short read is legal only at the end)."""
    parts = []
    done = 0
    while done < length:
        piece = os.pread(fd, length - done, offset + done)
        if not piece:
            break
        parts.append(piece)
        done += len(piece)
    return b"".join(parts)


class Verifier:
    def __init__(self, path, max_size, seed, quiet):
        self.path = path
        self.max_size = max_size
        self.seed = seed
        self.quiet = quiet
        self.model = bytearray()
        self.done = 0  # operations done since the seed's start (continues across --check)
        self.fd = -1
        self.rng = None
        self.counts = {}
        self.largest = 0  # the largest size the file had

    # --- the file ---------------------------------------------------------------------------
    def open(self, create):
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self.fd = os.open(self.path, flags, 0o644)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_size(self, what):
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            raise Mismatch("%s: the file has %d bytes, the model %d" % (what, size, len(self.model)))

    def check_all(self, what):
        """The whole file against the model, in pieces of 4 MiB."""
        self.check_size(what)
        for offset in range(0, len(self.model), BLOCK):
            expected = self.model[offset:offset + BLOCK]
            compare(what, offset, expected, read_exactly(self.fd, len(expected), offset))
        self.check_size(what)

    # --- random choices ---------------------------------------------------------------------
    def boundaries(self):
        return [b for b in range(BLOCK, self.max_size, BLOCK)]

    def pick_length(self):
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randint(1, 4096)
        if r < 0.85:
            return self.rng.randint(4097, 256 << 10)
        if r < 0.97:
            return self.rng.randint((256 << 10) + 1, 2 << 20)
        return self.rng.randint((2 << 20) + 1, 9 << 20)

    def pick_offset(self, length):
        """An offset where LENGTH bytes fit under max_size: near a boundary, near the end of the
        file (before or past it), or anywhere."""
        top = max(0, self.max_size - length)
        r = self.rng.random()
        size = len(self.model)
        if r < 0.35:
            bounds = self.boundaries()
            chunk_bounds = [b for b in bounds if b % CHUNK == 0]
            if chunk_bounds and self.rng.random() < 0.3:
                b = self.rng.choice(chunk_bounds)
            else:
                b = self.rng.choice(bounds) if bounds else 0
            offset = b - self.rng.randint(0, length)  # straddles b, or ends at it
        elif r < 0.6:
            offset = size + self.rng.randint(-min(size, 1 << 20), 1 << 20)
        else:
            offset = self.rng.randint(0, top)
        return min(max(0, offset), top)

    # --- operations -------------------------------------------------------------------------
    def op_pwrite(self):
        length = min(self.pick_length(), self.max_size)
        offset = self.pick_offset(length)
        data = self.rng.randbytes(length)
        written = 0
        while written < length:
            written += os.pwrite(self.fd, data[written:], offset + written)
        if offset > len(self.model):
            self.model.extend(bytes(offset - len(self.model)))
        self.model[offset:offset + length] = data
        self.largest = max(self.largest, len(self.model))
        last = offset + length - 1
        if offset // CHUNK != last // CHUNK:
            self.counts["pwrite across 64 MiB"] = self.counts.get("pwrite across 64 MiB", 0) + 1
        elif offset // BLOCK != last // BLOCK:
            self.counts["pwrite across 4 MiB"] = self.counts.get("pwrite across 4 MiB", 0) + 1

    def op_truncate(self):
        size = len(self.model)
        r = self.rng.random()
        if r < 0.4 and size:
            new = self.rng.randint(0, size)  # down
        elif r < 0.55:
            bounds = [b for b in self.boundaries() if b <= self.max_size]
            b = self.rng.choice(bounds) if bounds else 0
            new = b + self.rng.randint(-2, 2)  # next to a boundary
        else:
            new = size + self.rng.randint(0, 8 << 20)  # up
        new = min(max(0, new), self.max_size)
        os.ftruncate(self.fd, new)
        if new < size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - size))
        self.largest = max(self.largest, new)

    def op_pread(self):
        size = len(self.model)
        length = self.pick_length()
        if size and self.rng.random() < 0.8:
            offset = self.rng.randint(0, size - 1)
            if self.rng.random() < 0.3:
                bounds = [b for b in self.boundaries() if b < size]
                if bounds:
                    offset = max(0, self.rng.choice(bounds) - self.rng.randint(0, length))
        else:
            offset = size + self.rng.randint(-64, 4096)  # at or past the end
            offset = max(0, offset)
        got = read_exactly(self.fd, length, offset)
        compare("pread of %d bytes at %d" % (length, offset), offset,
                self.model[offset:offset + length], got)
        self.check_size("fstat after pread")

    def mmap_window(self):
        """(offset, length) of a mapping inside the file: offset page-aligned."""
        size = len(self.model)
        if size == 0:
            return None
        offset = self.rng.randint(0, size - 1) // PAGE * PAGE
        if self.rng.random() < 0.3:
            bounds = [b for b in self.boundaries() if b < size]
            if bounds:
                offset = max(0, self.rng.choice(bounds) - self.rng.randint(1, 4) * PAGE)
        length = min(size - offset, self.rng.randint(1, 8 << 20))
        return offset, length

    def op_mmap_read(self):
        window = self.mmap_window()
        if window is None:
            return
        offset, length = window
        with mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                       offset=offset) as m:
            got = m[:]
        compare("mmap read of %d bytes at %d" % (length, offset), offset,
                self.model[offset:offset + length], got)

    def op_mmap_write(self):
        window = self.mmap_window()
        if window is None:
            return
        offset, length = window
        with mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset) as m:
            for _ in range(self.rng.randint(1, 8)):
                n = self.rng.randint(1, min(length, 64 << 10))
                at = self.rng.randint(0, length - n)
                data = self.rng.randbytes(n)
                m[at:at + n] = data
                self.model[offset + at:offset + at + n] = data
            m.flush()  # msync(MS_SYNC) of the whole mapping

    def op_fsync(self):
        os.fsync(self.fd)

    def run(self, ops):
        """ops operations from the current position of the random sequence."""
        self.rng = random.Random("%d:%d" % (self.seed, self.done))
        table = [
            (34, "pwrite", self.op_pwrite),
            (8, "ftruncate", self.op_truncate),
            (30, "pread", self.op_pread),
            (10, "mmap read", self.op_mmap_read),
            (10, "mmap write", self.op_mmap_write),
            (4, "fsync", self.op_fsync),
        ]
        weights = [w for w, _, _ in table]
        batch_left = self.rng.randint(20, 400)
        for _ in range(ops):
            _, name, fn = self.rng.choices(table, weights)[0]
            try:
                fn()
            except OSError as e:
                raise Mismatch("operation %d (%s): %s" % (self.done, name, e))
            self.counts[name] = self.counts.get(name, 0) + 1
            self.done += 1
            batch_left -= 1
            if batch_left == 0:
                batch_left = self.rng.randint(20, 400)
                self.close()
                self.open(create=False)
                self.counts["reopen"] = self.counts.get("reopen", 0) + 1
                if self.rng.random() < 0.2:
                    self.check_all("whole file after reopen (operation %d)" % self.done)
                    self.counts["whole-file check"] = self.counts.get("whole-file check", 0) + 1

    # --- state across a remount -------------------------------------------------------------
    def save(self, state_path):
        os.fsync(self.fd)
        self.check_all("whole file before --save")
        header = {"magic": STATE_MAGIC, "seed": self.seed, "done": self.done,
                  "max_size": self.max_size, "size": len(self.model),
                  "sha256": hashlib.sha256(self.model).hexdigest()}
        tmp = state_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n")
            f.write(self.model)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_path)

    def load(self, state_path):
        with open(state_path, "rb") as f:
            header = json.loads(f.readline())
            model = bytearray(f.read())
        if header.get("magic") != STATE_MAGIC:
            raise ValueError("%s is not a state saved by fs_verify.py" % state_path)
        if len(model) != header["size"] or hashlib.sha256(model).hexdigest() != header["sha256"]:
            raise ValueError("%s is damaged (size or sha256 of the model)" % state_path)
        self.seed = header["seed"]
        self.done = header["done"]
        self.max_size = header["max_size"]
        self.model = model
        self.largest = len(model)


def say(quiet, text):
    if not quiet:
        print(text, file=sys.stderr)


def flip_byte(path, size, rng):
    """Flips one byte of PATH through a descriptor of its own; returns its offset."""
    offset = rng.randint(0, size - 1)
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([old[0] ^ 0xA5]), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return offset


def self_test(args):
    """Every corruption made behind the model's back must be caught, at its offset."""
    path = os.path.join(args.dir, args.name)
    rng = random.Random("self-test:%d" % args.seed)
    caught = 0
    for round_ in range(3):
        v = Verifier(path, args.max_size, args.seed + round_, True)
        v.open(create=True)
        v.run(args.ops if args.ops is not None else 300)
        v.check_all("clean check")  # must pass: nothing was corrupted yet
        if not v.model:
            v.op_pwrite()
        state = path + ".state"
        if round_ == 2:
            v.save(state)  # the clean file's model; the byte is flipped after it
            v.close()
        offset = flip_byte(path, len(v.model), rng)
        try:
            if round_ == 0:
                v.check_all("whole-file check")
            elif round_ == 1:
                # A pread of a region holding the flipped byte, the way op_pread checks.
                lo = max(0, offset - 100)
                compare("pread", lo, v.model[lo:offset + 100], read_exactly(v.fd, offset + 100 - lo, lo))
            else:
                w = Verifier(path, 0, 0, True)
                w.load(state)
                w.open(create=False)
                try:
                    w.check_all("--check")
                finally:
                    w.close()
                    os.unlink(state)
            print("self-test: NOT caught: byte %d flipped, round %d" % (offset, round_), file=sys.stderr)
        except Mismatch as e:
            expected_text = "file offset %d " % offset
            if expected_text in str(e):
                caught += 1
                say(args.quiet, "self-test round %d: caught at offset %d as expected:\n  %s"
                    % (round_, offset, str(e).replace("\n", "\n  ")))
            else:
                print("self-test: wrong offset reported (flipped %d): %s" % (offset, e), file=sys.stderr)
        finally:
            v.close()
            if os.path.exists(path + ".state"):
                os.unlink(path + ".state")
    os.unlink(path)
    if caught == 3:
        print("self-test: all 3 corruptions caught")
        return 0
    print("self-test: %d of 3 corruptions caught" % caught, file=sys.stderr)
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage=argparse.SUPPRESS)
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=None)
    p.add_argument("--max-size", type=parse_size, default=80 << 20)
    p.add_argument("--name", default="fs_verify.dat")
    p.add_argument("--save", metavar="STATE")
    p.add_argument("--check", metavar="STATE")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if not os.path.isdir(args.dir):
        p.error("%s is not a directory" % args.dir)
    if args.ops is not None and args.ops < 0:
        p.error("--ops must be >= 0")
    if args.self_test:
        return self_test(args)

    path = os.path.join(args.dir, args.name)
    v = Verifier(path, args.max_size, args.seed, args.quiet)
    start = time.monotonic()
    try:
        if args.check:
            try:
                v.load(args.check)
            except (OSError, ValueError, KeyError) as e:
                print("fs_verify: cannot load %s: %s" % (args.check, e), file=sys.stderr)
                return 2
            try:
                v.open(create=False)
            except OSError as e:
                raise Mismatch("open of %s after the remount: %s" % (path, e))
            v.check_all("--check %s (after %d operations, seed %d)" % (args.check, v.done, v.seed))
            say(args.quiet, "fs_verify: %s equals the saved model (%d bytes)" % (path, len(v.model)))
            ops = args.ops if args.ops is not None else 0
        else:
            v.open(create=True)
            ops = args.ops if args.ops is not None else 5000
        v.run(ops)
        v.check_all("whole file at the end")
        if args.save:
            v.save(args.save)
    except Mismatch as e:
        print("fs_verify: MISMATCH (seed %d, %s, after %d operations): %s"
              % (v.seed, path, v.done, e), file=sys.stderr)
        return 1
    finally:
        v.close()
    say(args.quiet, "fs_verify: ok: seed %d, %d operations (%s), %d bytes at the end, %d at most, %.1f s"
        % (v.seed, v.done, ", ".join("%s %d" % kv for kv in sorted(v.counts.items())),
           len(v.model), v.largest, time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
