"""`vm cp`: argument parsing, and the host side of a copy out of a hostile guest (the real
extractor fed crafted tar streams by a fake agent)."""

from __future__ import annotations

import asyncio
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from banger.errors import BangerError, InvalidArgument, NotFound
from banger.transfer import copy
from banger.transfer.spec import plan, split
from tests.unit.archive_craft import dirent, reg, special, sym, tar_of

# ---- arguments


@pytest.mark.parametrize(("arg", "want"), [
    ("web:/root/x", ("web", "/root/x")),
    ("web-1.a_b:/", ("web-1.a_b", "/")),
    ("./a:b", (None, "./a:b")),
    ("/tmp/a:b", (None, "/tmp/a:b")),
    ("plain", (None, "plain")),
    (":/x", (None, ":/x")),
    ("web:rel", ("web", "rel")),
])
def test_split(arg: str, want: tuple[str | None, str]) -> None:
    assert split(arg) == want


def test_plan_directions_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    into = plan("f.txt", "web:/root/../root/")
    assert (into.vm, into.src, into.dst, into.to_guest) == ("web", str(tmp_path / "f.txt"),
                                                            "/root", True)
    out = plan("web:/etc/hostname", ".")
    assert (out.vm, out.src, out.dst, out.to_guest) == ("web", "/etc/hostname", str(tmp_path),
                                                        False)


@pytest.mark.parametrize(("src", "dst", "message"), [
    ("a", "b", "exactly one side"),
    ("web:/a", "db:/b", "exactly one side"),
    ("a", "web:relative", "must be absolute"),
    ("web:/", "out", "below /"),
    ("web:/a\0b", "out", "NUL"),
])
def test_plan_refusals_are_one_line(src: str, dst: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        plan(src, dst)
    assert "\n" not in info.value.message


# ---- a hostile guest's tar, through copy.pull


class FakeProc:
    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    async def communicate(self, *, max_output: int) -> tuple[bytes, bytes, None]:
        return self.answer[:max_output], b"", None


class Ended:
    async def read(self) -> bytes:
        return b""


class FakeTarToDisk:
    """The guest's `tar -cf /dev/vdX` as a fake: the prepared tar lands on the payload disk."""

    stdout = stderr = Ended()

    def __init__(self, tar: bytes, disk: Path) -> None:
        with open(disk, "r+b") as f:
            f.write(tar)

    async def wait(self) -> Any:
        return type("Status", (), {"code": 0})()


class FakeAgent:
    """Answers the probe and streams a prepared tar for `get`, in uneven chunks; with a payload
    disk, the probe names it and the guest's tar writes the prepared tar onto it."""

    def __init__(self, tar: bytes, probe: bytes = b"exists 1234\n",
                 disk: Path | None = None) -> None:
        self.tar, self.disk = tar, disk
        self.probe = probe + (b"tar\npayload vdb\n" if disk else b"")

    async def exec(self, argv: list[str]) -> FakeProc | FakeTarToDisk:
        if self.disk and "/dev/$1" in argv[2] and argv[4] == "vdb":
            return FakeTarToDisk(self.tar, self.disk)  # a tar, or one file's bytes
        return FakeProc(self.probe)

    async def get(self, path: str, *, max_bytes: int) -> AsyncIterator[bytes]:
        assert self.disk is None, "the stream was used although the payload disk was free"
        for i in range(0, len(self.tar), 70_001):
            yield self.tar[i:i + 70_001]


def pull(agent: Any, src: str, dst: Path) -> list[tuple[int, int | None]]:
    seen: list[tuple[int, int | None]] = []
    asyncio.run(copy.pull(agent, "vm1", src, str(dst), lambda d, t: seen.append((d, t)),
                          agent.disk))
    return seen


def payload_disk(box: Path) -> Path:
    disk = box / "payload.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    return disk


@pytest.fixture
def box(tmp_path: Path) -> Path:
    (tmp_path / "victim").mkdir()
    (tmp_path / "dst").mkdir()
    return tmp_path


def outside(box: Path) -> list[str]:
    """Everything in the box that is not under dst (the victim dir itself aside)."""
    return sorted(str(p.relative_to(box)) for p in box.rglob("*")
                  if p != box / "victim" and p != box / "dst"
                  and (box / "dst") not in p.parents)


HOSTILE: dict[str, list[Any]] = {
    "absolute member": [dirent("evil"), reg("/evil/x")],
    "dot-dot member": [dirent("evil"), reg("evil/../../victim/x")],
    "absolute symlink, then a file through it": [dirent("evil"), sym("evil/a", "VICTIM"),
                                                 reg("evil/a/x")],
    "climbing symlink": [dirent("evil"), sym("evil/a", "../../victim"), reg("evil/a/x")],
    "device file": [dirent("evil"), special("evil/dev", tarfile.CHRTYPE)],
    "fifo": [dirent("evil"), special("evil/fifo", tarfile.FIFOTYPE)],
    "hard link out": [dirent("evil"), special("evil/h", tarfile.LNKTYPE, "/etc/passwd")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("rename", [False, True])
@pytest.mark.parametrize("path", ["stream", "payload disk"])
def test_a_hostile_tar_writes_nothing_outside_dst(box: Path, case: str, rename: bool,
                                                  path: str) -> None:
    entries = []
    for e in HOSTILE[case]:
        info = e[0] if isinstance(e, tuple) else e
        if info.linkname == "VICTIM":
            info.linkname = str(box / "victim")
        entries.append(e)
    dst = box / "dst" / "renamed" if rename else box / "dst"
    disk = payload_disk(box) if path == "payload disk" else None
    with pytest.raises(BangerError) as info:
        pull(FakeAgent(tar_of(entries), disk=disk), "/root/evil", dst)
    assert "\n" not in info.value.message and len(info.value.message) < 600
    assert list((box / "victim").iterdir()) == []
    assert outside(box) == (["payload.img"] if disk else [])
    if rename:  # the scratch dir next to DST is gone too
        assert list((box / "dst").iterdir()) == []


def test_only_the_copied_name_is_extracted(box: Path) -> None:
    tar = tar_of([dirent("evil"), reg("evil/ok", b"fine"), reg("other", b"x"),
                  dirent("more"), reg("more/y")])
    pull(FakeAgent(tar), "/root/evil", box / "dst")
    assert sorted(p.name for p in (box / "dst").rglob("*")) == ["evil", "ok"]


def test_a_file_out_takes_the_new_name_and_progress_counts_up(box: Path) -> None:
    data = bytes(range(256)) * 4096
    seen = pull(FakeAgent(tar_of([reg("f.bin", data, 0o640)])), "/root/f.bin",
                box / "dst" / "g.bin")
    assert (box / "dst" / "g.bin").read_bytes() == data
    assert (box / "dst" / "g.bin").stat().st_mode & 0o777 == 0o640
    assert [t for _, t in seen] == [1234] * len(seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_missing_source_and_missing_host_parent(box: Path) -> None:
    with pytest.raises(NotFound, match="does not exist in the guest"):
        pull(FakeAgent(b"", probe=b"none\n"), "/root/x", box / "dst")
    with pytest.raises(NotFound, match="is not a directory on the host"):
        pull(FakeAgent(b""), "/root/x", box / "no" / "x")


def test_a_truncated_tar_is_an_error_and_leaves_no_scratch(box: Path) -> None:
    tar = tar_of([reg("f", b"y" * 100_000)])[:20_000]
    with pytest.raises(BangerError):
        pull(FakeAgent(tar), "/root/f", box / "dst" / "f")
    assert list((box / "dst").iterdir()) == []


def test_a_hostile_probe_answer_is_only_parsed(box: Path) -> None:
    tar = tar_of([reg("f", b"z")])
    seen = pull(FakeAgent(tar, probe=b"exists \x1b[31m99999999999999999999\n"), "/root/f",
                box / "dst")
    assert (box / "dst" / "f").read_bytes() == b"z" and {t for _, t in seen} == {None}


def test_a_copy_out_through_the_payload_disk_then_empties_it(box: Path) -> None:
    data = bytes(range(256)) * 8192
    disk = payload_disk(box)
    pull(FakeAgent(tar_of([reg("f.bin", data, 0o600)]), disk=disk), "/root/f.bin",
         box / "dst" / "f.bin")
    assert (box / "dst" / "f.bin").read_bytes() == data
    assert disk.stat().st_size == 16 << 20 and disk.stat().st_blocks == 0  # host blocks freed


def test_a_payload_disk_in_use_or_too_small_means_the_stream(box: Path) -> None:
    from banger.transfer import disk as pdisk
    from banger.transfer import payload

    disk = payload_disk(box)

    async def claims() -> None:
        async with pdisk.claim(disk, 100) as first:
            assert first is not None
            async with pdisk.claim(disk, 100) as second:
                assert second is None  # a second copy into the same VM meanwhile
        async with pdisk.claim(disk, 16 << 20) as big:
            assert big is None

    asyncio.run(claims())
    assert payload.device(["exists", "5", "tar", "payload", "vdb"]) == "vdb"
    assert payload.device(["payload", "../sda"]) is None and payload.device(["payload"]) is None
    assert payload.regular_file(["regular", "1\u00b2", "644"]) is None  # '²'.isdigit()


def test_a_cancelled_copy_stops_writing_before_the_disk_is_emptied(box: Path) -> None:
    """The copy's thread is told to stop and waited for; then the disk is emptied and free."""
    from banger.transfer import disk as pdisk

    disk = payload_disk(box)
    src = box / "big.bin"
    src.write_bytes(b"s" * (12 << 20))
    started = threading.Event()

    def progress(done: int, total: int | None) -> None:
        started.set()
        time.sleep(0.05)  # a slow disk: the cancel lands mid-copy

    async def copy_then_cancel() -> None:
        async def copy() -> None:
            async with pdisk.claim(disk, 1) as claimed:
                assert claimed is not None
                await claimed.run(pdisk.write_file, claimed, src, progress)

        task = asyncio.create_task(copy())
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert disk not in pdisk._busy  # released only after the thread ended and it emptied

    asyncio.run(copy_then_cancel())
    assert disk.stat().st_blocks == 0 and disk.stat().st_size == 16 << 20


def test_copies_work_where_copy_file_range_cannot(box: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from banger.transfer import disk as pdisk

    def no_range(*_args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_range)
    data = bytes(range(256)) * 20000
    src = box / "f.bin"
    src.write_bytes(data)
    disk = pdisk.Disk(payload_disk(box), 16 << 20)
    assert pdisk.write_file(disk, src, lambda d, t: None)[0] == len(data)
    pdisk.copy_out(disk, len(data), box / "dst" / "back.bin", 0o777)
    back = box / "dst" / "back.bin"
    assert back.read_bytes() == data and back.stat().st_mode & 0o777 == 0o755


def test_one_file_out_skips_tar_and_never_writes_through_a_link(box: Path) -> None:
    data = b"payload bytes\n" * 1000
    disk = payload_disk(box)
    (box / "dst" / "f.txt").symlink_to(box / "victim" / "target")
    agent = FakeAgent(data, probe=f"exists {len(data)}\n".encode(), disk=disk)
    agent.probe += f"regular {len(data)} 4755\n".encode()
    pull(agent, "/root/f.txt", box / "dst")
    out = box / "dst" / "f.txt"
    assert not out.is_symlink() and out.read_bytes() == data
    assert out.stat().st_mode & 0o7777 == 0o755  # no setuid, no write for others, from a guest
    assert list((box / "victim").iterdir()) == []


def test_a_guest_lying_about_a_files_size_gets_at_most_the_disk(box: Path) -> None:
    disk = payload_disk(box)
    agent = FakeAgent(b"x" * 100, probe=b"exists 10\n", disk=disk)
    agent.probe += f"regular {14 << 20} 644\n".encode()  # fits the claim, not the truth
    pull(agent, "/root/f", box / "dst")
    assert (box / "dst" / "f").stat().st_size == 14 << 20
    agent.probe = b"exists 10\ntar\npayload vdb\nregular 99999999999 644\n"
    with pytest.raises(BangerError, match="not a valid tar"):  # too big for one file: tar
        pull(agent, "/root/g", box / "dst")
    assert not (box / "dst" / "g").exists()
