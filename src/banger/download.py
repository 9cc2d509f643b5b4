"""Verified downloads: stream to `<dest>.part`, hash while writing, check, rename atomically.

The `.part` name is predictable, so it is created fresh (a stale one removed, then
O_CREAT|O_EXCL|O_NOFOLLOW): a symlink planted there is never written through.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from banger.durable import create_fresh, fsync_path
from banger.errors import OperationFailed
from banger.progress import Progress

CHUNK = 1 << 20
CONNECT_TIMEOUT = 20.0
READ_TIMEOUT = 60.0
# Report at most this often so a fast local copy does not flood the caller.
REPORT_INTERVAL = 0.2


def part_path(dest: Path) -> Path:
    """Where a download is staged before it is verified and renamed into place."""
    return dest.with_suffix(dest.suffix + ".part")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


class _Sink:
    """Writes chunks to the .part file, hashes them and reports progress."""

    def __init__(self, fh: BinaryIO, url: str, total: int | None, progress: Progress | None,
                 limit: int | None = None):
        self.fh = fh
        self.limit = limit
        self.url = url
        self.total = total
        self.progress = progress
        self.hasher = hashlib.sha256()
        self.done = 0
        self._last = 0.0

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.hasher.update(chunk)
        self.done += len(chunk)
        if self.total is not None and self.done > self.total:
            raise _Fail(f"server sent more than the expected {self.total} bytes")
        if self.limit is not None and self.done > self.limit:
            raise _Fail(f"over the {human_bytes(self.limit)} cap")
        now = time.monotonic()
        if self.progress and now - self._last >= REPORT_INTERVAL:
            self._last = now
            self.report()

    def report(self) -> None:
        if self.progress is None:
            return
        frac = min(1.0, self.done / self.total) if self.total else None
        of = f" of {human_bytes(self.total)}" if self.total else ""
        self.progress("download", frac, f"{human_bytes(self.done)}{of} from {self.url}")


class _Fail(Exception):
    """Internal: a reason a download is bad; turned into one OperationFailed line."""

    hint = "check the URL/mirror and network, then retry"


class _Mismatch(_Fail):
    """The bytes arrived but are not the ones expected."""

    hint = "the file is not the expected one: check the --sha256/catalog entry and the source"


async def _http_chunks(url: str, expected: int | None) -> AsyncIterator[tuple[int | None, bytes]]:
    import httpx  # lazy: httpx costs ~100 ms to import and most commands never download

    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        async with (
            httpx.AsyncClient(
                timeout=timeout,
                follow_redirects=True,
                # identity: hashes and Content-Length must be about the file itself
                headers={"Accept-Encoding": "identity"},
            ) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise _Fail(f"HTTP {resp.status_code} {resp.reason_phrase}")
            length = resp.headers.get("content-length")
            total = int(length) if length and length.isdigit() else expected
            async for chunk in resp.aiter_raw(CHUNK):
                yield total, chunk
    except httpx.TimeoutException as exc:
        raise _Fail(f"timed out ({type(exc).__name__})") from exc
    except httpx.RemoteProtocolError as exc:
        raise _Fail(f"connection broke mid-transfer ({exc})") from exc
    except httpx.HTTPError as exc:
        raise _Fail(f"cannot reach host ({exc or type(exc).__name__})") from exc


def _local_path(url: str) -> Path:
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise _Fail("file:// URLs must name a local path")
    return Path(urllib.request.url2pathname(parsed.path))


async def _file_chunks(url: str, expected: int | None) -> AsyncIterator[tuple[int | None, bytes]]:
    path = _local_path(url)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise _Fail(f"cannot open {path}: {exc.strerror}") from exc
    with fh:
        total = os.fstat(fh.fileno()).st_size
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield total, chunk


def _chunks(url: str, expected: int | None) -> AsyncIterator[tuple[int | None, bytes]]:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _http_chunks(url, expected)
    if scheme == "file":
        return _file_chunks(url, expected)
    raise OperationFailed(f"cannot download {url}: only http(s):// and file:// URLs are supported")


def _check(sink: _Sink, sha256: str | None, size: int | None, announced: int | None) -> str:
    digest = sink.hasher.hexdigest()
    if announced is not None and sink.done != announced:
        raise _Fail(f"truncated: got {sink.done} of {announced} bytes")
    if size is not None and sink.done != size:
        raise _Mismatch(f"size is {sink.done} bytes, expected {size}")
    if sha256 is not None and digest != sha256.lower():
        raise _Mismatch(f"sha256 is {digest}, expected {sha256.lower()}")
    return digest


async def _stream(url: str, part: Path, sha256: str | None, size: int | None,
                  progress: Progress | None, limit: int | None = None) -> str:
    announced: int | None = None
    with os.fdopen(create_fresh(part), "wb") as fh:
        sink = _Sink(fh, url, size, progress, limit)
        async for total, chunk in _chunks(url, size):
            if announced is None and total is not None:
                announced = total
                sink.total = size if size is not None else total
            sink.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    sink.report()
    return _check(sink, sha256, size, announced)


async def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
    limit: int | None = None,
) -> str:
    """Fetch `url` into `dest` (verified against sha256/size when given, at most `limit` bytes);
    return its sha256."""
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        digest = await _stream(url, part, sha256, size, progress, limit)
        os.replace(part, dest)
        fsync_path(dest.parent)
    except _Fail as exc:
        _discard(part)
        raise OperationFailed(
            f"download of {url} failed: {exc}; {exc.hint}"
        ) from exc
    except OSError as exc:
        _discard(part)
        raise OperationFailed(
            f"download of {url} failed writing {dest}: {exc.strerror}; check disk space"
        ) from exc
    except BaseException:
        _discard(part)  # cancelled or unexpected: never leave a partial file behind
        raise
    return digest


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """sha256 of a file on disk, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["download", "human_bytes", "part_path", "sha256_file"]
