"""The socket file objects cheroot reads requests from and writes responses to.

cheroot's own (cheroot.makefile) are built on `_pyio`, the pure-Python io module: reading a
request line or a header walks Python-level peek/read calls with a lock each, and every write
copies into a bytearray first. Phones send one small request per connection, so that was a fixed
cost on every fetch (about a fifth of a plain fetch's CPU). These keep one buffer and let
bytes.find and socket.recv/sendall do the work. Same interface as cheroot's: readline(size),
read(size), iteration, has_data(), write(), flush(), close(), and the byte counters.

The writer holds what is written until flush() (or until MAX_HELD bytes): cheroot writes a
response's headers and its body separately, which made two TLS records and two sends per fetch,
and the phone two reads. The connection flushes after every request, and the reader flushes its
writer before it waits for the peer (a "100 Continue" must reach the client before its body
can come), so nothing held is ever waited on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

MIN_CHUNK = 16384
MAX_HELD = 65536


class SocketReader:
    def __init__(self, sock: socket.socket, bufsize: int = MIN_CHUNK) -> None:
        self._sock = sock
        self._buf = bytearray()  # deleting from the front of a bytearray is cheap
        self._chunk = max(bufsize, MIN_CHUNK)
        self.bytes_read = 0
        self.closed = False
        # Called before every wait on the socket: the same connection's writer's flush.
        self.before_wait: Callable[[], None] | None = None

    def _fill(self) -> bool:
        """One recv into the buffer; False at the end of the stream. Timeouts propagate."""
        if self.before_wait is not None:
            self.before_wait()
        data = self._sock.recv(self._chunk)
        self._buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self.bytes_read += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        searched = 0
        while True:
            end = self._buf.find(b"\n", searched)
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self._buf):
                return self._take(limit)
            searched = len(self._buf)
            if not self._fill():
                return self._take(len(self._buf))

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._fill():
            pass
        return self._take(size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def has_data(self) -> bool:
        """Buffered bytes of a next request (keep-alive) that need no wait on the socket."""
        return bool(self._buf)

    def close(self) -> None:
        self.closed = True  # the connection closes the socket itself


class SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._held: list[bytes] = []
        self._held_size = 0
        self.bytes_written = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._held.append(bytes(data))
        self._held_size += len(data)
        self.bytes_written += len(data)
        if self._held_size >= MAX_HELD:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Send what is held, in one send where the socket takes it."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        self._held_size = 0
        self._sock.sendall(data)

    def close(self) -> None:
        self.closed = True

