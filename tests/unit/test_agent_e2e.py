"""The real guest agent as a subprocess on the host, driven by the real client (no VM)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from banger.agent.client import AgentClient, connect_unix
from banger.agent.process import ExitStatus, PtySpec
from banger.errors import OperationFailed, Unavailable
from banger.guest.agent import protocol as proto
from tests.polling import process_runs, until

AGENT = [sys.executable, "-m", "banger.guest.agent"]
MiB = 1024 * 1024
LIBC_RESERVED = (1 << 31) | (1 << 32)  # SigIgn bits of signals 32 and 33

pytestmark = pytest.mark.timeout(120)


class AgentUnderTest:
    def __init__(self, tmp_path: Path, preexec: Callable[[], None] | None = None) -> None:
        self.root = tmp_path / "root"  # --test-root: configure writes here
        self.root.mkdir()
        self.socket = tmp_path / "agent.sock"
        self.log = tmp_path / "agent.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*AGENT, "--unix", str(self.socket),
                 "--test-root", str(self.root)],
                stderr=log, preexec_fn=preexec,
            )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "agent did not start listening"
            time.sleep(0.02)

    def run(self, scenario: Callable[[AgentClient], Awaitable[None]]) -> None:
        async def main() -> None:
            client = await connect_unix(self.socket, timeout=10)
            try:
                await scenario(client)
            finally:
                await client.close()

        asyncio.run(main())
        assert self.proc.poll() is None, "the agent died:\n" + self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentUnderTest]:
    under_test = AgentUnderTest(tmp_path)
    yield under_test
    under_test.stop()


def as_a_background_job() -> None:
    """What a non-interactive shell's `cmd &` leaves (the init wrapper under systemd), plus a
    blocked signal: both survive exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def test_an_inherited_ignore_that_cannot_be_changed_does_not_stop_the_agent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """libc's reserved real-time signals (32, 33) refuse a handler; the agent starts anyway."""
    from banger.guest.agent import server

    status = "SigIgn:\t0000000180000006\nSigBlk:\t0000000000000000\n"
    monkeypatch.setattr(server, "read_text", lambda path: status)
    saved = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGQUIT)}
    try:
        server.reset_inherited_signals()  # raised OSError (EINVAL) for signal 32
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_commands_get_default_signals_whatever_the_agent_inherited(tmp_path: Path) -> None:
    agent = AgentUnderTest(tmp_path, preexec=as_a_background_job)

    async def scenario(client: AgentClient) -> None:
        for pty in (None, PtySpec(term="xterm", rows=24, cols=80)):
            proc = await client.exec(["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"],
                                     pty=pty)
            out, _, status = await proc.communicate()
            assert status.code == 0
            fields = out.decode().split()
            assert fields[0::2] == ["SigBlk:", "SigIgn:"] and int(fields[1], 16) == 0
            # libc keeps its real-time signals 32 and 33 from every program: when the test
            # runner inherited them ignored, no agent can hand them over as default.
            assert int(fields[3], 16) & ~LIBC_RESERVED == 0, fields

    try:
        agent.run(scenario)
    finally:
        agent.stop()


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --------------------------------------------------------------------------- simple ops


def test_health_and_info(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        health = await client.health(timeout=5)
        assert health.ok is True and health.version and health.uptime >= 0
        info = await client.info()
        assert info.kernel == os.uname().release
        assert info.cpus == os.cpu_count()
        assert info.memory.total is not None and info.memory.total > 0
        assert info.python.count(".") == 2
        assert isinstance(info.systemd, bool) and info.os_release.get("ID")

    agent.run(scenario)


def test_an_op_the_agent_lacks_says_to_rebuild_the_image(agent: AgentUnderTest) -> None:
    """An image built by an older banger has an agent without newer ops (sessions...)."""
    async def scenario(client: AgentClient) -> None:
        with pytest.raises(OperationFailed, match=r"older than this banger .*vm restart"):
            await client._request("session.future", {}, 5.0, dict, "test")
        assert (await client.health(timeout=5)).ok  # the connection stays usable

    agent.run(scenario)


def test_configure_writes_hostname_hosts_and_keys(agent: AgentUnderTest) -> None:
    (agent.root / "etc").mkdir()
    (agent.root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\told\n")

    async def scenario(client: AgentClient) -> None:
        done = await client.configure(hostname="sandbox-1", authorized_keys=["ssh-ed25519 AAA k"],
                                      clock=time.time())
        assert done.configured == ["hostname", "authorized_keys", "clock"]
        with pytest.raises(OperationFailed, match="invalid hostname"):
            await client.configure(hostname="bad name!")

    agent.run(scenario)
    assert (agent.root / "etc" / "hostname").read_text() == "sandbox-1\n"
    assert (agent.root / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tsandbox-1\n"
    keys = agent.root / "root" / ".ssh" / "authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAA k\n"
    assert keys.stat().st_mode & 0o777 == 0o600


def test_configure_ssh_host_key_replaces_every_host_key(agent: AgentUnderTest) -> None:
    ssh = agent.root / "etc" / "ssh"
    ssh.mkdir(parents=True)
    for old in ("ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_ed25519_key"):
        (ssh / old).write_text("template's\n")
    (ssh / "sshd_config").write_text("# kept\n")

    async def scenario(client: AgentClient) -> None:
        done = await client.configure(ssh_host_key={"private": "PRIV\n", "public": "PUB\n"})
        assert done.configured == ["ssh_host_key"]

    agent.run(scenario)
    assert sorted(p.name for p in ssh.iterdir()) == [
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config"]
    assert (ssh / "ssh_host_ed25519_key").read_text() == "PRIV\n"
    assert (ssh / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (ssh / "ssh_host_ed25519_key.pub").read_text() == "PUB\n"


def test_configure_git_identity_reads_back_with_git(agent: AgentUnderTest) -> None:
    identity = {"name": 'Ana "the dev" O\\Neil', "email": "ana@example.com"}

    async def scenario(client: AgentClient) -> None:
        done = await client.configure(git_identity=identity)
        assert done.configured == ["git_identity"]
        again = await client.configure(git_identity={"name": "Bo", "email": "bo@example.com"})
        assert again.configured == ["git_identity"]  # an existing file is edited with git

    agent.run(scenario)
    gitconfig = agent.root / "root" / ".gitconfig"
    read = subprocess.run(["git", "config", "--file", str(gitconfig), "--get-regexp", "^user"],
                          capture_output=True, text=True, check=True).stdout
    assert read.splitlines() == ["user.name Bo", "user.email bo@example.com"]


def test_configure_git_identity_written_without_git(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        await client.configure(git_identity={"name": 'Ana "the dev" O\\Neil', "email": "a@b"})

    agent.run(scenario)
    gitconfig = agent.root / "root" / ".gitconfig"
    read = subprocess.run(["git", "config", "--file", str(gitconfig), "user.name"],
                          capture_output=True, text=True, check=True).stdout
    assert read == 'Ana "the dev" O\\Neil\n'


def test_poweroff_answers_first(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        await client.poweroff()
        assert (await client.health()).ok  # --test-root: logged, not performed

    agent.run(scenario)
    assert "not powering off" in agent.log.read_text()


# --------------------------------------------------------------------------- exec


def test_exec_argv_shell_exit_code_and_separate_stderr(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(["echo", "hello", "world"])
        assert await proc.communicate() == (b"hello world\n", b"", ExitStatus(0, None))
        proc = await client.exec(shell="echo out; echo err >&2; exit 3")
        out, err, status = await proc.communicate()
        assert (out, err, status.code, status.signal) == (b"out\n", b"err\n", 3, None)
        with pytest.raises(OperationFailed, match="cannot run"):
            await client.exec(["/nonexistent/binary"])

    agent.run(scenario)


def test_exec_death_by_signal(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(shell="kill -TERM $$")
        _, _, status = await proc.communicate()
        assert (status.code, status.signal, status.shell_code) == (None, signal.SIGTERM, 143)
        proc = await client.exec(["sleep", "30"])
        proc.signal(signal.SIGKILL)
        _, _, status = await proc.communicate()
        assert status.signal == signal.SIGKILL

    agent.run(scenario)


def test_exec_stdin_echo_of_several_mib(agent: AgentUnderTest) -> None:
    data = os.urandom(5 * MiB)

    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(["cat"], stdin=True)
        out, err, status = await proc.communicate(data)
        assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()
        assert (err, status.code) == (b"", 0)

    agent.run(scenario)


def test_exec_env_and_cwd(agent: AgentUnderTest, tmp_path: Path) -> None:
    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(shell='echo "$GREETING"; pwd', env={"GREETING": "hi there"},
                                 cwd=str(tmp_path))
        out, _, _ = await proc.communicate()
        assert out.decode().splitlines() == ["hi there", str(tmp_path)]

    agent.run(scenario)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_exec_as_another_user(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(shell="id -u; echo $USER", user="nobody")
        out, _, _ = await proc.communicate()
        assert out.decode().split() == [str(65534), "nobody"]

    agent.run(scenario)


def test_exec_pty_term_and_resize(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        proc = await client.exec(shell="echo term=$TERM; stty size; read go; stty size",
                                 pty=PtySpec(rows=30, cols=100, term="vt100"))
        seen = b""
        while b"30 100" not in seen:  # resize only after the first stty ran
            seen += await proc.stdout.read()
        proc.resize(40, 132)
        await proc.write(b"go\n")
        out, _, status = await proc.communicate()
        lines = (seen + out).decode().replace("\r", "").splitlines()
        assert lines[:2] == ["term=vt100", "30 100"]
        assert lines[-1] == "40 132"
        assert status.code == 0

    agent.run(scenario)


# --------------------------------------------------------------------------- flow control


def test_flood_on_one_channel_does_not_starve_health(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        stalled = await client.exec(["head", "-c", str(20 * MiB), "/dev/zero"])  # never read
        flood = await client.exec(["head", "-c", str(20 * MiB), "/dev/zero"])
        reader = asyncio.create_task(flood.stdout.read_all(max_bytes=20 * MiB))
        slowest = 0.0
        while not reader.done():
            started = time.monotonic()
            await client.health(timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.01)
        assert len(reader.result()) == 20 * MiB
        assert slowest < 2.0  # generous: the machine is shared; starvation would be ~forever
        stalled.kill()

    agent.run(scenario)


def test_get_flood_alongside_health(agent: AgentUnderTest, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB))

    async def scenario(client: AgentClient) -> None:
        async def fetch() -> bytes:
            return b"".join([chunk async for chunk in client.get(str(big))])

        task = asyncio.create_task(fetch())
        answers = 0
        while not task.done():
            await client.health(timeout=2)
            answers += 1
        with tarfile.open(fileobj=io.BytesIO(task.result())) as archive:
            member = archive.extractfile("big.bin")
            assert member is not None and member.read() == big.read_bytes()
        assert answers > 1

    agent.run(scenario)


# --------------------------------------------------------------------------- put / get


def test_put_get_round_trip_keeps_symlink_and_exec_bit(agent: AgentUnderTest,
                                                       tmp_path: Path) -> None:
    def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
              link: str = "") -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname = kind, mode, link
        return info

    archive = tar_of([
        (entry("tree", tarfile.DIRTYPE, 0o755), None),
        (entry("tree/readme.txt"), b"hello\n"),
        (entry("tree/bin", tarfile.DIRTYPE, 0o755), None),
        (entry("tree/bin/run.sh", mode=0o755), b"#!/bin/sh\necho run\n"),
        (entry("tree/latest", tarfile.SYMTYPE, 0o777, "readme.txt"), None),
    ])
    dest = tmp_path / "dest"

    async def scenario(client: AgentClient) -> None:
        result = await client.put(str(dest), chunks_of(archive, 1000))
        assert result["members"] == 5
        fetched = b"".join([chunk async for chunk in client.get(str(dest / "tree"))])
        with tarfile.open(fileobj=io.BytesIO(fetched)) as back:
            members = {m.name: m for m in back.getmembers()}
            assert members["tree/latest"].issym()
            assert members["tree/latest"].linkname == "readme.txt"
            assert members["tree/bin/run.sh"].mode & 0o777 == 0o755
            readme = back.extractfile("tree/readme.txt")
            assert readme is not None and readme.read() == b"hello\n"

    agent.run(scenario)
    assert (dest / "tree" / "latest").readlink() == Path("readme.txt")
    assert os.access(dest / "tree" / "bin" / "run.sh", os.X_OK)


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../escape", tarfile.REGTYPE, ""),
        ("/abs/escape", tarfile.REGTYPE, ""),
        ("a/../../escape", tarfile.REGTYPE, ""),
        ("out", tarfile.SYMTYPE, "../../escape"),
        ("abs-link", tarfile.SYMTYPE, "/etc/passwd"),
    ],
)
def test_put_rejects_members_escaping_dest(agent: AgentUnderTest, tmp_path: Path, name: str,
                                           kind: bytes, link: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    archive = tar_of([(info, b"evil" if kind == tarfile.REGTYPE else None)])
    dest = tmp_path / "a" / "b"

    async def scenario(client: AgentClient) -> None:
        with pytest.raises(OperationFailed, match="refusing"):
            await client.put(str(dest), chunks_of(archive))
        assert (await client.health()).ok

    agent.run(scenario)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a" / "escape").exists()


def test_put_refuses_writing_through_a_symlinked_dir(agent: AgentUnderTest,
                                                     tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sneaky").symlink_to(outside)
    archive = tar_of([(tarfile.TarInfo("sneaky/planted"), b"evil")])

    async def scenario(client: AgentClient) -> None:
        with pytest.raises(OperationFailed, match="escapes"):
            await client.put(str(dest), chunks_of(archive))

    agent.run(scenario)
    assert not (outside / "planted").exists()


def test_get_of_missing_path_fails(agent: AgentUnderTest) -> None:
    async def scenario(client: AgentClient) -> None:
        with pytest.raises(OperationFailed, match="does not exist"):
            async for _ in client.get("/nonexistent/path"):
                pass

    agent.run(scenario)


# --------------------------------------------------------------------------- sessions


def test_reconnect_resets_session_and_kills_old_commands(agent: AgentUnderTest,
                                                         tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        first = await connect_unix(agent.socket, timeout=10)
        proc = await first.exec(shell=f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; "
                                      "sleep 60; echo survived")
        await until(pid_file.exists, "the command to start")
        command = int(pid_file.read_text())
        await first.close()
        with pytest.raises(Unavailable):
            await proc.wait()
        # It would run for 60 s: gone within the deadline means the reset killed it.
        await until(lambda: not process_runs(command), "the old command to be killed")
        second = await connect_unix(agent.socket, timeout=10)
        assert (await second.health()).ok
        await second.hello()  # a second hello on the same connection also works
        assert (await second.health()).ok
        await second.close()

    asyncio.run(scenario())
    assert agent.proc.poll() is None


def test_fd_transport_over_socketpair(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*AGENT, "--fd", str(theirs.fileno())],
                            pass_fds=[theirs.fileno()], stderr=subprocess.DEVNULL)
    theirs.close()

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(sock=ours)
        client = AgentClient(reader, writer)
        await client.hello(timeout=10)
        assert (await client.health()).ok
        await client.close()

    asyncio.run(scenario())
    assert proc.wait(10) == 0  # --fd: EOF from the host ends the agent


# --------------------------------------------------------------------------- bad input


class RawConnection:
    """Speaks frames by hand, to send what a well-behaved client never would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.decoder = proto.FrameDecoder()
        self.pending: list[Any] = []
        self.send(proto.encode_json(proto.HELLO, 0, {"version": 1, "nonce": "raw"}))
        assert self.next_frame(0).type == proto.HELLO_ACK

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_frame(self, channel: int) -> proto.Frame:
        while True:
            for i, frame in enumerate(self.pending):
                if frame.channel == channel:
                    return self.pending.pop(i)  # type: ignore[no-any-return]
            self.pending.extend(self.decoder.feed(self.sock.recv(65536)))

    def request(self, channel: int, op: str) -> proto.Frame:
        self.send(proto.encode_json(proto.OPEN, channel, {"op": op, "params": {}}))
        return self.next_frame(channel)


def test_garbage_on_the_stream_is_skipped(agent: AgentUnderTest) -> None:
    raw = RawConnection(agent.socket)
    health = proto.encode_json(proto.OPEN, 5, {"op": "health", "params": {}})
    corrupt = bytearray(health)
    corrupt[9] ^= 0xFF  # flip a channel byte: the header CRC no longer matches
    raw.send(b"\x00garbage BNGR not a header" + bytes(corrupt) + os.urandom(3000))
    assert raw.request(7, "health").type == proto.RESULT
    assert "skipped" in agent.log.read_text()
    assert agent.proc.poll() is None


def test_oversized_frame_fails_its_channel_only(agent: AgentUnderTest) -> None:
    raw = RawConnection(agent.socket)
    payload = b"x" * (proto.MAX_PAYLOAD + 1)
    header = bytearray(proto.encode_frame(proto.OPEN, 3, b""))
    header[10:14] = len(payload).to_bytes(4, "big")
    header[14:18] = zlib.crc32(bytes(header[:14])).to_bytes(4, "big")
    raw.send(bytes(header) + payload)
    error = raw.next_frame(3)
    assert error.type == proto.ERROR and error.json()["code"] == proto.E_TOO_LARGE
    assert raw.next_frame(3).type == proto.CLOSE
    assert raw.request(4, "health").type == proto.RESULT


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (proto.encode_frame(proto.OPEN, 9, b"{not json"), proto.E_BAD_FRAME),
        (proto.encode_frame(proto.OPEN, 9, b"[1, 2]"), proto.E_BAD_FRAME),
        (proto.encode_json(proto.OPEN, 9, {"op": "frobnicate"}), proto.E_UNKNOWN_OP),
        (proto.encode_json(proto.OPEN, 9, {"op": "exec", "params": {"argv": []}}),
         proto.E_BAD_REQUEST),
        (proto.encode_frame(77, 9, b""), proto.E_BAD_FRAME),
        (proto.encode_frame(proto.WINDOW, 0, b"12"), proto.E_BAD_FRAME),
    ],
)
def test_malformed_requests_get_errors(agent: AgentUnderTest, frame: bytes, code: str) -> None:
    raw = RawConnection(agent.socket)
    raw.send(frame)
    channel = proto.FrameDecoder().feed(frame)[0].channel
    error = raw.next_frame(channel)
    assert error.type == proto.ERROR and error.json()["code"] == code
    assert raw.request(10, "health").type == proto.RESULT
