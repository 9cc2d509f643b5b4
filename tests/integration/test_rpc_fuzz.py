"""The daemon's RPC server under hostile lines: it never crashes and never holds unbounded input.

Every connection ends with one JSON error (never `internal`), a result for the few harmless
methods a line may happen to name, or a plain close; memory stays bounded by the line cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.errors import ErrorCode
from banger.rpc import wire
from banger.rpc.methods.testing import SWITCH
from tests.conftest import BIN

HARMLESS = ["ping", "daemon.status", "vm.list", "vm.show", "image.list", "kernel.list"]
CODES = {str(c) for c in ErrorCode} - {"internal"}


class Daemon:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "BANGER_HOME": str(home), SWITCH: "1"}  # debug.sleep
        self.socket = home / "run" / "bangerd.sock"

    def cli(self, *args: str) -> None:
        subprocess.run([str(BIN / "banger"), *args], env=self.env, check=True, timeout=60,
                       capture_output=True)

    @property
    def pid(self) -> int:
        return int((self.home / "run" / "bangerd.lock").read_text())

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:"))
                   .split()[1]) / 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(Path(tempfile.mkdtemp(prefix="bf-", dir="/tmp")))
    d.cli("daemon", "start")
    try:
        yield d
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            d.cli("daemon", "stop")
        shutil.rmtree(d.home, ignore_errors=True)


def exchange(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send data, half-close, read every reply line (each must be a JSON object)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        replies = read_replies(s)
    assert all(isinstance(r, dict) for r in replies), replies
    return replies


def read_replies(s: socket.socket) -> list[Any]:
    """Every line until the daemon closes; a reset after its last line (it left input unread)
    counts as a close."""
    replies = []
    with s.makefile("rb") as f, contextlib.suppress(ConnectionResetError):
        for line in f:
            replies.append(json.loads(line))
    return replies


def assert_answered_or_closed(replies: list[dict[str, Any]]) -> None:
    if not replies:
        return  # a clean close
    *progress, last = replies
    assert all(r.get("type") in ("progress", "info") for r in progress), replies
    if last["type"] == "result":
        return
    assert last["type"] == "error", replies
    error = last["error"]
    assert error["code"] in CODES, error  # never an internal error: hostile input is expected
    assert "\n" not in error["message"] and len(error["message"]) <= 1000, error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 0, 2]) | json_values,
        "method": st.sampled_from(HARMLESS) | st.text(max_size=2000) | json_values,
        "params": st.fixed_dictionaries({}, optional={"name": st.text(max_size=30),
                                                      "all": json_values}) | json_values,
        "op_id": st.sampled_from(["op-0000abcd"]) | json_values,
        "type": st.sampled_from(["cancel", "stdin"]) | json_values,
        "len": st.sampled_from([0, 3, 1 << 20, (1 << 20) + 1, -1, 1 << 62]) | json_values,
    },
).map(lambda d: json.dumps(d).encode() + b"\n")
raw_lines = st.binary(max_size=2000).map(lambda b: b + b"\n")
deep = st.integers(1, 200_000).map(lambda n: b"[" * n + b"\n")
trailing = st.lists(envelopes | raw_lines, max_size=3).map(b"".join)


@pytest.mark.fuzz
@given(first=envelopes | raw_lines | deep | st.binary(max_size=200), rest=trailing)
def test_hostile_lines_get_an_error_or_a_close(daemon: Daemon, first: bytes, rest: bytes) -> None:
    assert_answered_or_closed(exchange(daemon.socket, first + rest))


def test_daemon_survives_the_fuzzing(daemon: Daemon) -> None:
    pid = daemon.pid
    [reply] = exchange(daemon.socket, b'{"v":2,"method":"ping","params":{}}\n')
    assert reply["result"]["pong"] == "ok" and daemon.pid == pid


def send_in_background(path: Path, chunks: Iterator[bytes]) -> tuple[socket.socket, list[int]]:
    """Write chunks from a thread until the daemon stops reading; sent[0] counts bytes."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    sent = [0]

    def pump() -> None:
        with contextlib.suppress(OSError):
            for chunk in chunks:
                s.sendall(chunk)
                sent[0] += len(chunk)
            s.shutdown(socket.SHUT_WR)

    threading.Thread(target=pump, daemon=True).start()
    return s, sent


def replies_of(s: socket.socket) -> list[Any]:
    s.settimeout(60)
    with s:
        return read_replies(s)


def test_a_100_mib_line_is_refused_without_reading_it(daemon: Daemon) -> None:
    before = daemon.peak_rss_mib()
    total = 100 * 1024 * 1024
    s, sent = send_in_background(daemon.socket, (b"x" * (1 << 20) for _ in range(100)))
    [reply] = replies_of(s)
    assert reply["type"] == "error" and reply["error"]["code"] == "invalid_argument"
    assert f"longer than {wire.MAX_REQUEST_LINE >> 20} MiB" in reply["error"]["message"]
    assert sent[0] < total  # refused part way through, not read to the end
    assert daemon.peak_rss_mib() - before < 3 * (wire.MAX_REQUEST_LINE >> 20) + 16


def test_input_the_operation_does_not_read_is_not_buffered_without_bound(daemon: Daemon) -> None:
    """A client flooding lines at a method that never reads them is slowed, not buffered."""
    before = daemon.peak_rss_mib()
    request = json.dumps({"v": 2, "method": "debug.sleep", "params": {"seconds": 2}}).encode()
    line = b'{"type":"stdin","len":1048576}\n' + b"A" * (1 << 20)  # binary input frames
    s, sent = send_in_background(daemon.socket, iter([request + b"\n", *[line] * 300]))
    replies = replies_of(s)
    assert daemon.peak_rss_mib() - before < 64
    assert sent[0] < 300 * len(line)
    assert replies[-1]["type"] == "result"  # the operation ran on undisturbed
