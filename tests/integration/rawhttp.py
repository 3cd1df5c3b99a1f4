"""Raw-socket HTTP/1.1 for the tests that curl cannot express (pipelining, malformed requests,
slow clients). Imported by the Python snippets of the *_test.sh scripts."""

import os
import socket
import time

PORT = int(os.environ.get("SM_PORT", "0"))
DEADLINE = 20.0  # seconds for any single wait: generous, a loaded machine is slow


def connect(port=None, timeout=DEADLINE):
    return socket.create_connection(("127.0.0.1", port or PORT), timeout=timeout)


class Reader:
    """Reads responses from a socket; keeps bytes that belong to the next response."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        self.buf += data
        return bool(data)

    def response(self, head_only=False):
        """(status, {lower-case name: value}, body); raises EOFError if the peer closed first."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; received {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), headers, body

    def until_eof(self, deadline=DEADLINE):
        """Everything until the peer closes (b"" if it was already closed); TimeoutError if the
        peer keeps the connection open past the deadline. A reset counts as a close."""
        self.sock.settimeout(deadline)
        end = time.monotonic() + deadline
        try:
            while not self.eof:
                if time.monotonic() > end:
                    raise TimeoutError("peer did not close the connection")
                self._fill()
        except ConnectionResetError:
            self.eof = True
        except socket.timeout:
            raise TimeoutError(f"peer did not close the connection; received {self.buf!r}")
        data, self.buf = self.buf, b""
        return data


def get(path, host="t"):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
