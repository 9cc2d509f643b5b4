"""banger.client on a scripted daemon socket: typed results, progress callbacks, streamed exec
output with its exit code, capped capture, errors of the banger.errors family, async cancel."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from banger.client import AsyncClient, Client
from banger.errors import NotFound
from banger.paths import resolve_paths
from banger.rpc import wire

Reply = Callable[[dict[str, Any], socket.socket], None]


class FakeDaemon:
    """Answers each request with the reply scripted for its method; records the requests."""

    def __init__(self, path: Path) -> None:
        self.replies: dict[str, Reply] = {}
        self.requests: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            # unbuffered: what follows the request line (stdin, signals) stays in the socket
            request = json.loads(conn.makefile("rb", buffering=0).readline())
            self.requests.append(request)
            self.replies[request["method"]](request, conn)


def result(value: object, *events: dict[str, Any],
           data: tuple[tuple[str, bytes], ...] = ()) -> Reply:
    def reply(_req: dict[str, Any], conn: socket.socket) -> None:
        for event in events:
            conn.sendall(wire.encode(event))
        for stream, chunk in data:
            for piece in wire.frames({"type": "data", "stream": stream}, chunk):
                conn.sendall(piece)
        conn.sendall(wire.encode({"type": "result", "result": value}))
    return reply


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    monkeypatch.setenv("BANGER_HOME", str(tmp_path))
    paths = resolve_paths()
    paths.ensure()
    fake = FakeDaemon(paths.socket)
    yield fake
    fake.sock.close()


def vm_record(name: str) -> dict[str, Any]:
    return {"id": "0123", "name": name, "state": "running", "image": "img", "kernel": "k",
            "vcpu": 1, "memory_mib": 512, "disk_mib": 4096, "created_at": "t", "updated_at": "t"}


def test_create_is_typed_and_reports_progress(daemon: FakeDaemon) -> None:
    daemon.replies["vm.create"] = result(
        vm_record("web"), {"type": "progress", "stage": "boot", "fraction": 0.5, "message": ""})
    seen: list[dict[str, Any]] = []
    vm = Client(autostart=False).vm_create("web", vcpu=2, on_progress=seen.append)
    assert vm.name == "web" and vm.memory_mib == 512
    assert [e["stage"] for e in seen] == ["boot"]
    assert daemon.requests[0]["params"]["vcpu"] == 2


def test_exec_streams_both_outputs_and_returns_the_exit_code(daemon: FakeDaemon) -> None:
    daemon.replies["vm.exec"] = result({"exit_code": 3, "signal": None, "code": 3},
                                       data=(("stdout", b"hi\n"), ("stderr", b"oops\n")))
    out: list[bytes] = []
    err: list[bytes] = []
    res = Client(autostart=False).exec("web", ["sh", "-c", "x"], on_stdout=out.append,
                                       on_stderr=err.append)
    assert (res.code, b"".join(out), b"".join(err)) == (3, b"hi\n", b"oops\n")
    assert daemon.requests[0]["params"]["argv"] == ["sh", "-c", "x"]


def test_capture_keeps_the_cap_and_counts_the_rest(daemon: FakeDaemon) -> None:
    daemon.replies["vm.exec"] = result({"exit_code": 0, "signal": None, "code": 0},
                                       data=(("stdout", b"a" * 3000), ("stdout", b"b" * 3000)))
    got = Client(autostart=False).exec_capture("web", ["yes"], limit=4096)
    assert got.stdout == b"a" * 3000 + b"b" * 1096 and got.stdout_dropped == 1904
    assert got.stderr == b"" and not got.timed_out


def test_a_daemon_error_is_the_banger_error_family(daemon: FakeDaemon) -> None:
    def missing(_req: dict[str, Any], conn: socket.socket) -> None:
        conn.sendall(wire.encode({"type": "error", "error": {
            "code": "not_found", "message": "no VM named 'nope'"}}))

    daemon.replies["vm.show"] = missing
    with pytest.raises(NotFound, match="no VM named 'nope'"):
        Client(autostart=False).vm_show("nope")


def test_the_async_client_gives_the_same_typed_results(daemon: FakeDaemon) -> None:
    daemon.replies["vm.list"] = result([vm_record("a"), vm_record("b")])

    async def main() -> list[str]:
        return [vm.name for vm in await AsyncClient(autostart=False).vm_list()]

    assert asyncio.run(main()) == ["a", "b"]


def test_cancelling_an_await_hangs_up_on_the_daemon(daemon: FakeDaemon) -> None:
    hung_up = threading.Event()

    def stall(_req: dict[str, Any], conn: socket.socket) -> None:
        rest = conn.recv(4096)  # the client's cancel line, then EOF
        while rest:
            rest = conn.recv(4096)
        hung_up.set()

    daemon.replies["vm.create"] = stall

    async def main() -> None:
        task = asyncio.create_task(AsyncClient(autostart=False).vm_create("slow"))
        while not daemon.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert hung_up.wait(10)


def _read_messages(conn: socket.socket) -> Iterator[dict[str, Any]]:
    """The client's lines after its request, with each stdin frame's bytes as "data"."""
    f = conn.makefile("rb")
    while line := f.readline():
        msg = json.loads(line)
        if "len" in msg:
            msg["data"] = f.read(msg["len"])
        yield msg


def test_stdin_is_fed_then_closed(daemon: FakeDaemon) -> None:
    def echo(_req: dict[str, Any], conn: socket.socket) -> None:
        got = b""
        for msg in _read_messages(conn):
            if msg["type"] == "stdin":
                got += msg["data"]
            elif msg["type"] == "stdin_eof":
                break
        result({"exit_code": 0, "signal": None, "code": 0}, data=(("stdout", got),))(_req, conn)

    daemon.replies["vm.exec"] = echo
    got = Client(autostart=False).exec_capture("web", ["cat"], stdin=b"x" * 3_000_000,
                                               limit=4_000_000)
    assert got.stdout == b"x" * 3_000_000 and daemon.requests[0]["params"]["stdin"] is True


def test_a_timeout_kills_the_command_and_says_so(daemon: FakeDaemon) -> None:
    def hang_until_killed(_req: dict[str, Any], conn: socket.socket) -> None:
        for msg in _read_messages(conn):
            if msg == {"type": "signal", "signal": 9}:
                result({"exit_code": None, "signal": 9, "code": 137},
                       data=(("stdout", b"partial"),))(_req, conn)
                return

    daemon.replies["vm.exec"] = hang_until_killed
    got = Client(autostart=False).exec_capture("web", ["sleep", "1000"], timeout=0.2)
    assert (got.timed_out, got.code, got.stdout) == (True, 137, b"partial")
