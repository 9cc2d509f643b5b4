"""Workspace exports from a hostile guest: the strict reader, the host-written file, apply.

The guest side is the real EXPORT script run with the host's git on a clone, so the exports
here are byte for byte what a well-behaved guest sends; hostile ones are crafted from them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from banger.archive import ArchiveError
from banger.errors import BangerError, Conflict
from banger.workspace import exportfile, guest
from banger.workspace.apply import apply_export
from tests.workspace_attack import PLANTED, add_escape, hostile_export

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_CONFIG_GLOBAL": "/dev/null"}


def sh(cmd: str, cwd: Path) -> str:
    return subprocess.run(cmd, shell=True, cwd=cwd, env=ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every temporary directory under tmp_path/t, so a write next to it is seen."""
    tmp = tmp_path / "t"
    tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    yield tmp
    assert not (tmp / PLANTED).exists() and not (tmp_path / PLANTED).exists()


def shipped(tmp_path: Path, branch: str = "main") -> tuple[Path, Path]:
    """A host repo on branch and the guest's copy of it, shipped as banger does."""
    host = tmp_path / "host"
    host.mkdir()
    sh(f"git init -q -b main && echo one > a.txt && git add a.txt && git commit -qm one && "
       f"git checkout -q -B {branch}", host)
    work = tmp_path / "guest"
    sh(f"git clone -q {host} {work}", tmp_path)
    sh("git update-ref refs/banger/base HEAD && "
       "git update-ref refs/banger/shipped-tree HEAD^{tree}", work)
    return host, work


def guest_export(work: Path, out: Path) -> bytes:
    """The export tar a genuine agent sends after the EXPORT script ran in work."""
    subprocess.run(["sh", "-c", guest.EXPORT, "sh", str(work), str(out), ""], env=ENV,
                   check=True, capture_output=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(out, arcname="export")
    return buf.getvalue()


async def chunked(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def receive(data: bytes) -> exportfile.Export:
    return asyncio.run(exportfile.receive(chunked(data), "VM x's workspace export"))


def retar(data: bytes, extra: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """The members of data plus extra ones, in one new tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        for info, body in extra:
            dst.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def member(name: str, body: bytes | None = b"x", kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(body) if body is not None and kind == tarfile.REGTYPE else 0
    return info, body if kind == tarfile.REGTYPE else None


def replaced(data: bytes, name: str, body: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if m.name == f"export/{name}":
                m.size = len(body)
                dst.addfile(m, io.BytesIO(body))
            else:
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    return buf.getvalue()


@pytest.fixture
def good(tmp_path: Path) -> bytes:
    _, work = shipped(tmp_path)
    sh("echo two >> a.txt && git commit -qam two && echo dirty > b.txt", work)
    return guest_export(work, tmp_path / "out")


def test_a_genuine_export_is_read_and_rewritten_with_the_record(good: bytes,
                                                                tmp_path: Path) -> None:
    got = receive(good)
    assert (got.commits, got.files) == (1, 2)
    out = tmp_path / "work.tar"
    record = {"host_repo": "/src/proj", "branch": "feature", "base": got.base}
    exportfile.write_file(got, out, json.dumps(record).encode())
    got.remove()
    assert not got.parts.root.exists()
    again = exportfile.read_file(out)
    assert again.record == exportfile.WorkspaceRecord("/src/proj", "feature", got.base)
    assert (again.base, again.head) == (got.base, got.head)
    assert out.stat().st_mode & 0o077 == 0  # the user's code, readable by the user only
    again.remove()


def test_the_cve_2025_4517_chain_writes_nothing_outside(private_tmp: Path) -> None:
    """The shape that made tarfile's data filter write outside its destination."""
    dest_len = len(str(private_tmp)) + len("/.extract-") + 8
    with pytest.raises(ArchiveError) as err:
        receive(hostile_export(None, dest_len))
    assert "refusing member 'export/ddd" in err.value.message
    assert "a directory; only regular files are allowed" in err.value.message
    assert os.listdir(private_tmp) == []  # the private dir went too


@pytest.mark.parametrize(("extra", "says"), [
    (member("export/unknown.txt"), "unexpected member"),
    (member("export/escape", None, tarfile.SYMTYPE, "/tmp"), "a symlink"),
    (member("export/base2", None, tarfile.LNKTYPE, "export/base"), "a hard link"),
    (member("export/sub", None, tarfile.DIRTYPE), "a directory"),
    (member("other/base"), "a second top-level directory"),
    (member("export/base", b"0" * 40), "appears twice"),
    (member("export/../../x"), "contains '..'"),
    (member("/etc/passwd"), "absolute path"),
    (member("export/fifo", None, tarfile.FIFOTYPE), "a device or fifo"),
    (member("export/branch", b"main\n"), "unexpected member"),  # the guest never names it
    (member("export/workspace.json", b"{}"), "unexpected member"),  # only the host writes it
])
def test_anything_but_the_known_files_is_refused(
        good: bytes, extra: tuple[tarfile.TarInfo, bytes | None], says: str) -> None:
    with pytest.raises(ArchiveError) as err:
        receive(retar(good, [extra]))
    assert says in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(("name", "body", "says"), [
    ("base", b"abc123\n", "base is not a full hex object id"),
    ("base", b"0" * 39 + b"g\n", "base is not a full hex object id"),
    ("head", b"\x1b[31m" + b"0" * 40, "head is not a full hex object id"),
    ("summary", b"1 2 3\n", "summary is not two decimal counts"),
    ("summary", b"99999999999 1\n", "summary is not two decimal counts"),
    ("summary", b"-1 2\n", "summary is not two decimal counts"),
    ("base", b"0" * 200, "over its cap"),
    ("summary", b"1" * 65, "over its cap"),
])
def test_malformed_values_are_one_clear_line(good: bytes, name: str, body: bytes,
                                             says: str) -> None:
    with pytest.raises(ArchiveError) as err:
        receive(replaced(good, name, body))
    assert says in err.value.message
    assert "\x1b" not in err.value.message and "\n" not in err.value.message


def test_a_missing_member_and_junk_are_refused(good: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(good)) as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if m.name != "export/head":
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    with pytest.raises(ArchiveError, match="lacks head"):
        receive(buf.getvalue())
    with pytest.raises(ArchiveError, match="not a valid tar archive"):
        receive(b"\x1b]0;pwned\x07" + os.urandom(5000))
    with pytest.raises(ArchiveError, match="truncated"):
        receive(good[:3000])


def test_a_stream_past_the_cap_is_cut_off(good: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid export followed by endless bytes: the daemon stops reading at the cap."""
    monkeypatch.setitem(exportfile.GUEST_MEMBERS, "commits.bundle", 64 << 10)
    monkeypatch.setitem(exportfile.GUEST_MEMBERS, "changes.diff", 64 << 10)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield good
        while True:
            sent += 1 << 16
            yield bytes(1 << 16)

    with pytest.raises(ArchiveError, match=r"more than .* bytes; refusing it"):
        asyncio.run(exportfile.receive(endless(), "VM x's workspace export"))
    assert sent < 16 << 20


def test_the_part_file_is_never_written_through_a_link(good: bytes, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    out = tmp_path / "work.tar"
    (tmp_path / ".work.tar.part").symlink_to(victim)
    got = receive(good)
    with pytest.raises(Conflict, match="already exists"):
        exportfile.write_file(got, out, None)
    got.remove()
    assert victim.read_text() == "keep\n" and not out.exists()


def test_an_old_escape_chain_in_a_file_is_refused(tmp_path: Path, private_tmp: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_escape(tar, "export", len(str(private_tmp)) + len("/.extract-") + 8)
    export = tmp_path / "evil.tar"
    export.write_bytes(buf.getvalue())
    with pytest.raises(ArchiveError, match="refusing member"):
        exportfile.read_file(export)


def applied_export(tmp_path: Path, good_tar: bytes, record: dict[str, str] | None,
                   extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> Path:
    got = receive(good_tar)
    out = tmp_path / "work.tar"
    exportfile.write_file(got, out, json.dumps(record).encode() if record else None)
    got.remove()
    if extra:
        out.write_bytes(retar(out.read_bytes(), extra))
    return out


def test_the_recorded_branch_moves_not_the_guests(tmp_path: Path) -> None:
    host, work = shipped(tmp_path, branch="feature")
    base = sh("git rev-parse HEAD", host)
    # The guest switches to main and commits there; an old-style branch file says main too.
    sh("git checkout -q -b main && echo guest >> a.txt && git commit -qam guest", work)
    out = applied_export(tmp_path, guest_export(work, tmp_path / "out"),
                         {"host_repo": str(host), "branch": "feature", "base": base},
                         [member("export/branch", b"main\n")])
    export = exportfile.read_file(out)
    applied = apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert (applied.branch, applied.switched, applied.commits) == ("feature", True, 1)
    assert sh("git rev-parse main", host) == base  # main did not move
    assert sh("git symbolic-ref --short HEAD", host) == "feature"
    assert sh("git log -1 --format=%s", host) == "guest"
    assert (host / "a.txt").read_text() == "one\nguest\n"


def test_without_a_record_commits_go_to_banger_vm(tmp_path: Path) -> None:
    host, work = shipped(tmp_path, branch="main")
    sh("echo guest >> a.txt && git commit -qam guest", work)
    export = exportfile.read_file(applied_export(tmp_path, guest_export(work, tmp_path / "o"),
                                                 None, [member("export/branch", b"main\n")]))
    applied = apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert applied.branch == "banger/x"
    assert sh("git symbolic-ref --short HEAD", host) == "banger/x"


def test_staged_only_changes_survive_apply(tmp_path: Path) -> None:
    host, work = shipped(tmp_path)
    base = sh("git rev-parse HEAD", host)
    sh("echo staged > s.txt && git add s.txt && echo later > s.txt", host)
    sh("echo guest > g.txt && git add g.txt && git commit -qm guest", work)
    export = exportfile.read_file(applied_export(
        tmp_path, guest_export(work, tmp_path / "o"),
        {"host_repo": str(host), "branch": "main", "base": base}))
    apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert sh("git show :s.txt", host) == "staged"  # the staged version, not lost
    assert (host / "s.txt").read_text() == "later\n"
    assert sh("git log -1 --format=%s", host) == "guest"
    assert sh("git status --porcelain", host).splitlines() == ["AM s.txt"]


def test_staged_changes_the_guest_also_changed_refuse_before_anything_moves(
        tmp_path: Path) -> None:
    host, work = shipped(tmp_path)
    base = sh("git rev-parse HEAD", host)
    sh("echo host >> a.txt && git add a.txt", host)
    sh("echo guest >> a.txt && git commit -qam guest", work)
    export = exportfile.read_file(applied_export(
        tmp_path, guest_export(work, tmp_path / "o"),
        {"host_repo": str(host), "branch": "main", "base": base}))
    with pytest.raises(Conflict, match=r"staged changes .* touch files the guest's commits"):
        apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert sh("git rev-parse HEAD", host) == base
    assert sh("git show :a.txt", host) == "one\nhost"


def test_a_failed_work_tree_apply_says_what_landed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    host, work = shipped(tmp_path)
    base = sh("git rev-parse HEAD", host)
    sh("echo guest >> a.txt && git commit -qam guest && echo wip > w.txt", work)
    export = exportfile.read_file(applied_export(
        tmp_path, guest_export(work, tmp_path / "o"),
        {"host_repo": str(host), "branch": "main", "base": base}))

    def broken(*args: object) -> None:
        raise Conflict("cannot merge the guest's changes: \x1b[2Jboom")

    monkeypatch.setattr("banger.workspace.apply._apply_changes", broken)
    with pytest.raises(BangerError) as err:
        apply_export(export, host, vm="x", branch=None)
    export.remove()
    message = err.value.message
    assert message.startswith("1 commit(s) on branch main (now checked out) in ")
    assert "but the guest's uncommitted changes did not apply" in message
    assert "refs/banger/x/work" in message and "\x1b" not in message


def test_staged_files_the_guest_committed_as_they_were_apply_cleanly(tmp_path: Path) -> None:
    """The usual case: the guest commits what the host had staged, and more."""
    host, work = shipped(tmp_path)
    base = sh("git rev-parse HEAD", host)
    sh("echo new > n.txt && git add n.txt && git mv a.txt b.txt", host)
    sh("echo new > n.txt && git mv a.txt b.txt && echo g > g.txt && git add -A && "
       "git commit -qm guest", work)
    export = exportfile.read_file(applied_export(
        tmp_path, guest_export(work, tmp_path / "o"),
        {"host_repo": str(host), "branch": "main", "base": base}))
    applied = apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert applied.switched and sh("git log -1 --format=%s", host) == "guest"
    assert sh("git status --porcelain", host) == ""


def test_a_bundle_with_a_malformed_commit_never_reaches_the_host_repo(tmp_path: Path) -> None:
    """git 2.39 skips fsckObjects for bundles; apply checks the objects in quarantine."""
    host, work = shipped(tmp_path)
    base = sh("git rev-parse HEAD", host)
    bad = sh(f"printf 'tree %s\\nparent {base}\\nauthor a a@b 1 +0000\\ncommitter a <a@b> 1 "
             "+0000\\n\\nbad\\n' $(git rev-parse HEAD^{tree}) | "
             "git hash-object -t commit --literally -w --stdin", work)
    sh(f"git update-ref refs/heads/main {bad}", work)
    export = exportfile.read_file(applied_export(
        tmp_path, guest_export(work, tmp_path / "o"),
        {"host_repo": str(host), "branch": "main", "base": base}))
    with pytest.raises(BangerError, match=r"did not pass git's checks.*missingEmail"):
        apply_export(export, host, vm="x", branch=None)
    export.remove()
    assert subprocess.run(["git", "-C", str(host), "cat-file", "-e", bad]).returncode != 0
    assert sh("git for-each-ref refs/banger", host) == ""
