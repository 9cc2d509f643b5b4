"""file_read's bounds without a VM: a fake client plays the guest's side of the exec, so what
file_read asks the guest for (and what it never does: copy the file out whole) is seen."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import pytest
from mcp import Client

from banger.client import AsyncClient
from banger.client.execs import Captured
from banger.mcp.server import build


class FakeGuest:
    """Runs file_read's script against an in-memory file table, as the guest's sh would."""

    def __init__(self, files: dict[str, bytes | None], *, stat_size: int | None = None) -> None:
        self.files, self.stat_size = files, stat_size  # None: a directory
        self.limits: list[int] = []

    async def cp_out(self, *_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("file_read copied the guest file out whole")

    async def exec_capture(self, _vm: str, argv: list[str], *, limit: int,
                           **_kwargs: Any) -> Captured:
        self.limits.append(limit)
        path, count = argv[-2], int(argv[-1])
        if path not in self.files:
            return Captured(2, None, 2, b"", b"")
        body = self.files[path]
        if body is None:
            return Captured(3, None, 3, b"", b"")
        size = len(body) if self.stat_size is None else self.stat_size
        out = f"{size}\n".encode() + body[:count]  # head -c count: no more leaves the guest
        return Captured(0, None, 0, out[:limit], b"", max(len(out) - limit, 0))


def read(guest: FakeGuest, **args: Any) -> tuple[bool, Any]:
    async def main() -> tuple[bool, Any]:
        async with Client(build(cast(AsyncClient, guest))) as c:
            res = await c.call_tool("file_read", {"name": "vm", **args})
            if res.is_error:
                return True, res.content[0].text  # type: ignore[union-attr]
            return False, res.structured_content

    return asyncio.run(main())


def test_a_big_file_is_cut_in_the_guest_and_its_real_size_reported() -> None:
    guest = FakeGuest({"/big": b"x" * 5000})
    failed, got = read(guest, path="/big", max_bytes=100)
    assert not failed and got["content"] == "x" * 100
    assert got["truncated"] == "4900 more bytes not shown"
    assert guest.limits and all(limit <= 100 + 64 for limit in guest.limits)


def test_a_whole_small_file_and_base64() -> None:
    raw = bytes(range(256))
    failed, got = read(FakeGuest({"/raw": raw}), path="/raw", encoding="base64")
    assert not failed and base64.b64decode(got["content"]) == raw and "truncated" not in got


def test_a_file_stat_calls_empty_but_longer_than_the_cap_is_still_marked_cut() -> None:
    failed, got = read(FakeGuest({"/proc/x": b"y" * 50}, stat_size=0), path="/proc/x",
                       max_bytes=10)
    assert not failed and got["content"] == "y" * 10 and "1 more" in got["truncated"]


@pytest.mark.parametrize(("path", "says"), [("/usr", "not a regular file"),
                                            ("/nope", "no such file")])
def test_directories_and_missing_files_are_one_line(path: str, says: str) -> None:
    failed, line = read(FakeGuest({"/usr": None}), path=path)
    assert failed and says in line and "\n" not in line


def test_a_guest_that_answers_garbage_is_one_line() -> None:
    class Liar(FakeGuest):
        async def exec_capture(self, *_a: Any, **_k: Any) -> Captured:
            return Captured(0, None, 0, b"\x1b[2Jnot a size", b"")

    failed, line = read(Liar({}), path="/etc/passwd")
    assert failed and "something else" in line and "\x1b" not in line


def test_file_write_refuses_more_than_its_cap_before_anything_is_written() -> None:
    from banger.mcp.common import WRITE_CAP

    class NoWrites(FakeGuest):
        async def cp_in(self, *_a: Any, **_k: Any) -> None:
            raise AssertionError("file_write wrote an oversized file")

    async def main() -> str:
        async with Client(build(cast(AsyncClient, NoWrites({})))) as c:
            res = await c.call_tool("file_write", {"name": "vm", "path": "/f",
                                                   "content": "é" * (WRITE_CAP // 2 + 1)})
            assert res.is_error
            return res.content[0].text  # type: ignore[union-attr]

    assert f"takes up to {WRITE_CAP}" in asyncio.run(main())
