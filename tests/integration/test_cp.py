"""`banger vm cp` on a real VM: trees with modes and links both ways, big files' hashes, a
guest's hostile links stopped at DST, and one-line errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = pytest.mark.vm
VM = "cpvm"


@pytest.fixture(scope="module")
def vb() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        b.run("vm", "create", "--name", VM, timeout=300, check=True)
        yield b


def guest(b: Banger, script: str) -> str:
    return b.run("vm", "exec", VM, "--", "sh", "-c", script, timeout=120, check=True).stdout


def one_line_error(proc: object, *needles: str) -> str:
    code, err = proc.returncode, proc.stderr  # type: ignore[attr-defined]
    assert code == 1, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err
    return str(lines[0])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tree_with_modes_and_a_symlink_round_trips(vb: Banger, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "secret").write_text("s")
    (src / "secret").chmod(0o600)
    (src / "sub" / "data.txt").write_text("data\n")
    (src / "sub").chmod(0o750)
    (src / "link").symlink_to("sub/data.txt")
    vb.run("vm", "cp", str(src), f"{VM}:/root/", timeout=120, check=True)
    listing = guest(vb, "cd /root/tree && stat -c '%n %a %F' run.sh secret sub link && "
                        "readlink link && ./run.sh && cat link")
    assert listing.split("\n") == ["run.sh 755 regular file", "secret 600 regular file",
                                   "sub 750 directory", "link 777 symbolic link",
                                   "sub/data.txt", "hi", "data", ""]
    back = tmp_path / "back"
    back.mkdir()
    vb.run("vm", "cp", f"{VM}:/root/tree", str(back), timeout=120, check=True)
    out = back / "tree"
    assert (out / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "secret").stat().st_mode & 0o777 == 0o600
    assert (out / "sub").stat().st_mode & 0o777 == 0o750
    assert os.readlink(out / "link") == "sub/data.txt" and (out / "link").read_text() == "data\n"
    # To a name that does not exist yet: the copy takes that name (like cp and docker cp).
    vb.run("vm", "cp", f"{VM}:/root/tree/sub/data.txt", str(tmp_path / "renamed.txt"),
           timeout=120, check=True)
    assert (tmp_path / "renamed.txt").read_text() == "data\n"


def test_a_20_mb_file_keeps_its_sha256_both_ways(vb: Banger, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    vb.run("vm", "cp", str(big), f"{VM}:/root/big-in.bin", timeout=300, check=True)
    assert guest(vb, "sha256sum /root/big-in.bin").split()[0] == sha(big)
    guest(vb, "head -c 20M /dev/urandom > /root/big-out.bin")
    want = guest(vb, "sha256sum /root/big-out.bin").split()[0]
    vb.run("vm", "cp", f"{VM}:/root/big-out.bin", str(tmp_path / "out.bin"), timeout=300,
           check=True)
    assert sha(tmp_path / "out.bin") == want


def test_a_guests_links_out_of_dst_are_refused(vb: Banger, tmp_path: Path) -> None:
    """Links pointing outside the copy (absolute or climbing) end the copy; nothing lands
    outside DST, and a link is never followed to write a later member."""
    victim = tmp_path / "victim"
    victim.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    for target in (str(victim), "../../../../../../" + str(victim).lstrip("/")):
        guest(vb, f"rm -rf /root/evil && mkdir -p /root/evil && ln -s '{target}' /root/evil/a"
                  " && mkdir /root/evil/b && echo pwned > /root/evil/b/file")
        proc = vb.run("vm", "cp", f"{VM}:/root/evil", str(dst), timeout=120)
        one_line_error(proc, "refusing member", "symlink")
        assert list(victim.iterdir()) == []
    # A file named like a path stays a name inside DST.
    guest(vb, "rm -rf /root/evil && mkdir -p /root/evil && echo x > '/root/evil/..x'")
    vb.run("vm", "cp", f"{VM}:/root/evil", str(dst), timeout=120, check=True)
    assert (dst / "evil" / "..x").read_text() == "x\n" and list(victim.iterdir()) == []


def test_errors_are_one_line(vb: Banger, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    one_line_error(vb.run("vm", "cp", str(tmp_path / "f"), "nosuchvm:/root/"), "nosuchvm")
    one_line_error(vb.run("vm", "cp", f"{VM}:/root/nothing-here", str(tmp_path)),
                   "/root/nothing-here", "does not exist in the guest")
    one_line_error(vb.run("vm", "cp", f"{VM}:/etc/hostname", str(tmp_path / "no" / "dir" / "x")),
                   "is not a directory on the host")
    one_line_error(vb.run("vm", "cp", str(tmp_path / "missing"), f"{VM}:/root/"),
                   "does not exist on the host")
    one_line_error(vb.run("vm", "cp", str(tmp_path / "f"), f"{VM}:/no/such/dir/f"),
                   "is not a directory in the guest")
    one_line_error(vb.run("vm", "cp", str(tmp_path / "f"), str(tmp_path / "g")),
                   "exactly one side")
    one_line_error(vb.run("vm", "cp", str(tmp_path / "f"), f"{VM}:relative"), "absolute")
    vb.run("vm", "create", "--name", "cpstopped", "--no-start", timeout=120, check=True)
    one_line_error(vb.run("vm", "cp", str(tmp_path / "f"), "cpstopped:/root/"), "cpstopped",
                   "vm start")


def test_a_replaced_guest_tar_cannot_write_outside_dst(vb: Banger, tmp_path: Path) -> None:
    """The guest's tar (which `vm cp` out runs) swapped for one that sends crafted streams:
    absolute names, '..', a link out then a file through it. Nothing lands outside DST."""
    from tests.unit.archive_craft import dirent, reg, sym, tar_of

    victim = tmp_path / "victim"
    victim.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    streams = [
        tar_of([reg(str(victim / "abs"), b"pwned")]),
        tar_of([dirent("evil"), reg("evil/../../victim/dotdot", b"pwned")]),
        tar_of([dirent("evil"), sym("evil/a", str(victim)), reg("evil/a/through", b"pwned")]),
        tar_of([dirent("evil"), sym("evil/a", "../../victim"), reg("evil/a/through", b"p")]),
    ]
    # It writes where -f points: the payload disk (or stdout, on the stream path).
    fake = ('#!/bin/sh\nout=-\nwhile [ $# -gt 0 ]; do [ "$1" = -cf ] && out=$2; shift; done\n'
            'if [ "$out" = - ]; then cat /root/hostile.tar; else cat /root/hostile.tar > "$out"; fi\n')
    guest(vb, "mkdir -p /root/evil && mv /usr/bin/tar /usr/bin/tar.real")
    vb.run("vm", "exec", "-i", VM, "--", "sh", "-c", "cat > /usr/bin/tar && chmod 755 /usr/bin/tar",
           input=fake, timeout=60, check=True)
    try:
        for stream in streams:
            vb.run("vm", "exec", "-i", VM, "--", "sh", "-c", "cat > /root/hostile.tar",
                   input=stream.decode("latin-1"), timeout=60, check=True)
            assert guest(vb, "wc -c < /root/hostile.tar").strip() == str(len(stream))
            proc = vb.run("vm", "cp", f"{VM}:/root/evil", str(dst), timeout=120)
            one_line_error(proc, "refusing member")
            assert list(victim.iterdir()) == []
            assert all(p.is_relative_to(dst) for p in tmp_path.rglob("*")
                       if p not in (victim, dst))
    finally:
        guest(vb, "mv /usr/bin/tar.real /usr/bin/tar")


def test_copies_go_through_the_payload_disk(vb: Banger, tmp_path: Path) -> None:
    """Root stays /dev/vda; the payload disk is there, and empty again after a copy."""
    assert guest(vb, "cat /sys/block/vdb/serial; echo; findmnt -no SOURCE /") == \
        "banger-payload\n/dev/vda\n"
    def sectors_read() -> int:  # /sys/block/*/stat: the third field counts 512-byte sectors
        return int(guest(vb, "cat /sys/block/vdb/stat").split()[2])

    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(3 << 20))
    before = sectors_read()
    vb.run("vm", "cp", str(f), f"{VM}:/root/", timeout=120, check=True)
    assert guest(vb, "sha256sum /root/f.bin").split()[0] == sha(f)
    assert sectors_read() - before >= (3 << 20) // 512
    disk = next((vb.home / "state" / "vms").glob("*/payload.img"))
    assert disk.stat().st_blocks == 0  # the host's copy of the tar is gone
