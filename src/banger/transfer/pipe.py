"""A bounded byte pipe between a blocking thread (tarfile, the extractor) and the event loop."""

from __future__ import annotations

import queue
import threading

CHUNK = 1024 * 1024  # what one hop carries: the RPC and agent frames' size
DEPTH = 4  # chunks in flight: memory stays at a few MiB whatever the copy's size


class Closed(Exception):
    """The other side gave up; stop producing."""


class Pipe:
    """Chunks one way; `None` ends the stream, an exception item fails it."""

    def __init__(self) -> None:
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(DEPTH)
        self.closed = threading.Event()  # the consumer is gone (failed or done early)

    def put(self, item: bytes | BaseException | None) -> None:
        """Blocking put (call from a thread); Closed once the consumer stopped."""
        while not self.closed.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise Closed()

    def get(self) -> bytes | None:
        """Blocking get (call from a thread); re-raises a producer's failure; Closed once the
        pipe was closed and nothing is left (the producer gave up)."""
        while True:
            try:
                item = self._q.get(timeout=0.2)
                break
            except queue.Empty:
                if self.closed.is_set():
                    raise Closed() from None
        if isinstance(item, BaseException):
            raise item
        return item


class PipeWriter:
    """File-like writer for tarfile: gathers its small writes into CHUNK-sized items."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._pipe.put(bytes(self._buffer))
            self._buffer = bytearray()


class PipeReader:
    """File-like reader for the extractor over chunks the loop puts."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._pending = memoryview(b"")
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while not self._pending and not self._eof:
            chunk = self._pipe.get()
            if chunk is None:
                self._eof = True
            else:
                self._pending = memoryview(chunk)
        if size < 0 or size >= len(self._pending):
            data, self._pending = bytes(self._pending), memoryview(b"")
        else:
            data, self._pending = bytes(self._pending[:size]), self._pending[size:]
        return data
