"""Frame codec, guest-side compatibility (Python 3.7 syntax, lazy imports) and PID 1 mode."""

from __future__ import annotations

import ast
import asyncio
import os
import py_compile
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from banger.agent.client import AgentClient
from banger.guest import AGENT_MODULES, GUEST_LIB, guest_files
from banger.guest.agent import protocol as proto

AGENT_DIR = Path(__file__).parents[2] / "src" / "banger" / "guest" / "agent"
GUEST_FILES = [AGENT_DIR / name for name in AGENT_MODULES]


def frames(decoder: proto.FrameDecoder, data: bytes) -> list[proto.Frame]:
    out = decoder.feed(data)
    assert all(isinstance(f, proto.Frame) for f in out)
    return out  # type: ignore[return-value]


def test_round_trip_fed_one_byte_at_a_time() -> None:
    wire = (proto.encode_json(proto.OPEN, 1, {"op": "health"})
            + proto.encode_frame(proto.DATA, 2, b"\x00" * 70000, proto.STDOUT)
            + proto.encode_window(3, 123))
    decoder = proto.FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += frames(decoder, wire[i : i + 1])
    assert [(f.type, f.channel, f.stream) for f in got] == [
        (proto.OPEN, 1, 0), (proto.DATA, 2, proto.STDOUT), (proto.WINDOW, 3, 0)]
    assert got[0].json() == {"op": "health"}
    assert got[1].payload == b"\x00" * 70000
    assert proto.decode_window(got[2].payload) == 123
    assert decoder.discarded == 0


def test_garbage_and_bad_checksum_are_skipped() -> None:
    good = proto.encode_frame(proto.DATA, 7, b"payload", proto.STDERR)
    corrupt = bytearray(good)
    corrupt[6] ^= 1  # channel byte changed: header CRC mismatch
    wire = b"junk" + proto.MAGIC + b"BNG" + bytes(corrupt) + good
    decoder = proto.FrameDecoder()
    got = frames(decoder, wire)
    assert [(f.channel, f.payload) for f in got] == [(7, b"payload")]
    assert decoder.discarded == len(wire) - len(good)


def test_magic_split_across_feeds_is_kept() -> None:
    good = proto.encode_frame(proto.CLOSE, 4)
    decoder = proto.FrameDecoder()
    assert decoder.feed(b"noise" + good[:2]) == []
    assert [f.channel for f in frames(decoder, good[2:])] == [4]


def test_oversized_frame_is_reported_and_its_payload_skipped() -> None:
    decoder = proto.FrameDecoder(max_payload=10)
    header = proto.encode_frame(proto.DATA, 5, b"x" * 40)[: proto.HEADER_SIZE]
    after = proto.encode_frame(proto.CLOSE, 6)
    out = decoder.feed(header + b"x" * 15)
    assert len(out) == 1 and isinstance(out[0], proto.OversizedFrame)
    assert (out[0].channel, out[0].length) == (5, 40)
    assert [f.channel for f in frames(decoder, b"x" * 25 + after)] == [6]


def test_encoder_refuses_oversized_payload() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        proto.encode_frame(proto.DATA, 1, b"x" * (proto.MAX_PAYLOAD + 1))


@pytest.mark.parametrize("payload", [b"{bad", b"[1]", b"\xff\xfe", b""])
def test_malformed_json_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.decode_json(payload)


@pytest.mark.parametrize("path", GUEST_FILES, ids=lambda p: p.name)
def test_guest_files_parse_as_python_37(path: Path, tmp_path: Path) -> None:
    """Only python3.11 exists here, so check syntax with the 3.7 grammar instead."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 7))
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_guest_agent_startup_imports_stay_small(tmp_path: Path) -> None:
    """Import the agent exactly as the init wrapper does, from exactly what an image gets."""
    for guest_file in guest_files():
        if guest_file.path.startswith(GUEST_LIB + "/"):
            dest = tmp_path / guest_file.path[len(GUEST_LIB) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(guest_file.data)
    init = (tmp_path / "init").read_text()
    boot = init.split('AGENT_BOOT="', 1)[1].split('"', 1)[0].replace("$LIB", str(tmp_path))
    assert boot.endswith("; sys.exit(main(sys.argv[1:]))")
    code = boot.replace("sys.exit(main(sys.argv[1:]))", "print(' '.join(sorted(m for m in (" \
        "'tarfile', 'subprocess', 'ctypes', 'pty', 'pwd', 'argparse', 'typing', 'socket', " \
        "'signal', 'banger') if m in sys.modules)), main.__module__)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.split() == ["agent.server"]


async def unreaped(client: AgentClient, orphans: list[str]) -> bytes:
    """Zombies in the agent's PID namespace, and those orphans until they are reaped."""
    listed = " ".join(f"/proc/{pid}" for pid in orphans)
    proc = await client.exec(shell="grep -l '^State:.*zombie' /proc/[0-9]*/status; "
                                   f"ls -d {listed} 2>/dev/null; true")
    out, _, _ = await proc.communicate()
    return out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare for a PID namespace")
def test_pid1_mode_reaps_orphans_and_reports_own_children() -> None:
    ours, theirs = socket.socketpair()
    agent = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
         "-m", "banger.guest.agent", "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()], stderr=subprocess.DEVNULL)
    theirs.close()

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(sock=ours)
        client = AgentClient(reader, writer)
        ack = await client.hello(timeout=10)
        assert ack.pid1 is True
        proc = await client.exec(shell="sleep 0.2 & echo $!; sleep 0.1 & echo $!; exit 5")
        out, _, status = await proc.communicate()  # leaves two orphans
        assert status.code == 5
        orphans = out.decode().split()
        assert len(orphans) == 2
        deadline = time.monotonic() + 10  # the orphans exit within 0.2 s; a zombie stays forever
        while left := await unreaped(client, orphans):
            assert time.monotonic() < deadline, f"PID 1 did not reap: {left!r}"
            await asyncio.sleep(0.05)
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        agent.wait(10)
