"""download(): verified, atomic, and a one-line error that leaves no partial file."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from banger.download import download, part_path
from banger.errors import OperationFailed

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, dest: Path, **kw: object) -> str:
    return asyncio.run(download(url, dest, **kw))  # type: ignore[arg-type]


def assert_clean(dest: Path) -> None:
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_http_download_verifies_and_reports_bytes(server: str, tmp_path: Path) -> None:
    seen: list[tuple[str, float | None, str]] = []
    dest = tmp_path / "sub" / "file.bin"
    digest = fetch(f"{server}/ok", dest, sha256=SHA, size=len(BODY),
                   progress=lambda s, f=None, m="": seen.append((s, f, m)))
    assert digest == SHA
    assert dest.read_bytes() == BODY
    assert not part_path(dest).exists()
    assert seen[-1][0] == "download" and seen[-1][1] == 1.0
    assert "MiB" in seen[-1][2]


def test_wrong_sha256_fails_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with pytest.raises(OperationFailed) as err:
        fetch(f"{server}/ok", dest, sha256="0" * 64)
    assert "sha256" in str(err.value) and f"{server}/ok" in str(err.value)
    assert "\n" not in str(err.value)
    assert_clean(dest)


def test_wrong_size_fails(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with pytest.raises(OperationFailed, match="bytes"):
        fetch(f"{server}/ok", dest, size=len(BODY) + 1)
    assert_clean(dest)


def test_truncated_download_fails(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with pytest.raises(OperationFailed) as err:
        fetch(f"{server}/truncated", dest)
    assert f"{server}/truncated" in str(err.value)
    assert_clean(dest)


def test_http_error_fails(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with pytest.raises(OperationFailed, match="HTTP 404"):
        fetch(f"{server}/missing", dest)
    assert_clean(dest)


def test_unreachable_host_fails(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "file.bin"
    with pytest.raises(OperationFailed, match="cannot reach"):
        fetch(f"http://127.0.0.1:{port}/x", dest)
    assert_clean(dest)


def test_existing_dest_survives_a_failed_download(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(OperationFailed):
        fetch(f"{server}/ok", dest, sha256="1" * 64)
    assert dest.read_bytes() == b"old"
    assert not part_path(dest).exists()


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)
    dest = tmp_path / "dest.bin"
    assert fetch(src.as_uri(), dest, sha256=SHA) == SHA
    assert dest.read_bytes() == BODY
    with pytest.raises(OperationFailed, match="cannot open"):
        fetch((tmp_path / "nope").as_uri(), tmp_path / "x")
    assert_clean(tmp_path / "x")


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="only http"):
        fetch("ftp://127.0.0.1/x", tmp_path / "x")
