"""The daemon's side of `vm cp`: a host tar into the guest's `put`, the guest's `get` tar out
through the one safe extractor. The CLI and the daemon share a host and a user, so host paths
pass as absolute paths and the daemon reads and writes them itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from banger.agent.client import AgentClient
from banger.archive import Limits
from banger.archive.extract import Extractor
from banger.errors import InvalidArgument, NotFound, OperationFailed
from banger.textsafe import one_line
from banger.transfer import disk as pdisk
from banger.transfer import payload
from banger.transfer.pipe import Closed, Pipe, PipeReader, PipeWriter

Progress = Callable[[int, int | None], None]  # bytes so far, total when known
LIMITS = Limits()  # the extractor's default caps: 1M members, 8 GiB a file, 32 GiB in all

# The guest answers one word (and a size); its text is parsed, never shown raw.
_PROBE_DST = ('if [ -d "$1" ]; then echo dir; elif [ -d "$(dirname -- "$1")" ]; '
              'then echo parent; else echo none; fi; command -v tar >/dev/null && echo tar')
# The guest's own tar extracts a copy in (native code: faster than the agent's Python tarfile
# under TCG); a host-made tar is trusted, and the guest's tar can only harm the guest.
# 256 KiB records (-B: whole records from a pipe): with 10 KiB ones it was 1.6x slower.
_GUEST_TAR = ["tar", "--numeric-owner", "-b", "512", "-B", "-xpf", "-", "-C"]
_PROBE_SRC = ('if [ -e "$1" ] || [ -L "$1" ]; then echo "exists $(du -sbP -- "$1" 2>/dev/null '
              '| cut -f1)"; else echo none; fi; command -v tar >/dev/null && echo tar')
# Out of the guest, its own tar writes the stream (parsed on the host by the safe extractor,
# like the agent's `get`, which images without tar still use).
_GUEST_TAR_OUT = ["tar", "-b", "512", "-cf", "-", "-C"]


def _shown(path: str) -> str:
    return one_line(path, 300)


def host_size(path: Path) -> int:
    """Bytes of regular files under path, links not followed (for progress)."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


async def push(agent: AgentClient, vm: str, src: str, dst: str, progress: Progress,
               disk: Path | None = None) -> int:
    """Host src -> guest dst (into it when it is a directory); returns the bytes copied.
    `disk`: the VM's payload disk file, the fast way when the guest can use it."""
    source = Path(src)
    if not os.path.lexists(source):
        raise NotFound(f"{_shown(src)} does not exist on the host")
    answer = await payload.probe(agent, f"{_PROBE_DST}; {payload.PROBE}", dst)
    where = answer[0] if answer else "none"
    if where == "dir":
        dest_dir, arcname = dst, source.name or "."
    elif where == "parent":
        dest_dir, arcname = os.path.dirname(dst) or "/", os.path.basename(dst)
    else:
        raise NotFound(f"{vm}:{_shown(os.path.dirname(dst))} is not a directory in the guest")
    total = host_size(source)
    dev = payload.device(answer)
    async with pdisk.claim(disk if dev and "tar" in answer[1:] else None, total) as claimed:
        if claimed is not None and dev is not None:
            with contextlib.suppress(pdisk.TooBig):
                await _push_payload(agent, claimed, dev, source, dest_dir, arcname, progress,
                                    total)
                return total
    return await _push_stream(agent, source, arcname, dest_dir, answer, total, progress)


async def _push_payload(agent: AgentClient, disk: pdisk.Disk, dev: str, source: Path,
                        dest_dir: str, arcname: str, progress: Progress, total: int) -> None:
    st = source.lstat()
    if stat.S_ISREG(st.st_mode):  # one file: no tar on either side
        length, st = await disk.run(pdisk.write_file, disk, source, progress)
        dest = f"{dest_dir.rstrip('/')}/{arcname}"
        await payload.guest_place_file(agent, dev, dest, length, st)
        return
    length = await disk.run(pdisk.write_tar, disk, source, arcname, progress, total)
    await payload.guest_read(agent, dev, length, dest_dir)


async def _push_stream(agent: AgentClient, source: Path, arcname: str, dest_dir: str,
                       answer: list[str], total: int, progress: Progress) -> int:
    src = str(source)
    pipe = Pipe()

    def produce() -> None:
        try:
            writer = PipeWriter(pipe)
            with tarfile.open(fileobj=writer, mode="w|",  # type: ignore[call-overload]
                              format=tarfile.PAX_FORMAT) as archive:
                archive.add(str(source), arcname=arcname)  # links stored, never followed
            writer.flush()
            pipe.put(None)
        except Closed:
            return
        except OSError as exc:
            pipe.put(InvalidArgument(f"cannot read {_shown(exc.filename or src)} on the host: "
                                     f"{exc.strerror}"))

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while (chunk := await asyncio.to_thread(pipe.get)) is not None:
            sent += len(chunk)
            progress(sent, total)
            yield chunk

    producer = asyncio.create_task(asyncio.to_thread(produce))
    try:
        if "tar" in answer[1:]:
            await _guest_tar(agent, dest_dir, chunks())
        else:  # no tar in the image: the agent's own extractor
            await agent.put(dest_dir, chunks(), timeout=600)
    finally:
        pipe.closed.set()
        await producer
    return total


async def _guest_tar(agent: AgentClient, dest_dir: str, chunks: AsyncIterator[bytes]) -> None:
    proc = await agent.exec([*_GUEST_TAR, dest_dir], stdin=True)
    readers = asyncio.gather(payload.keep(proc.stdout), payload.keep(proc.stderr))
    try:
        async for chunk in chunks:
            await proc.write(chunk)
        await proc.close_stdin()
        _, err = await readers
    except BaseException:
        proc.kill()
        readers.cancel()
        raise
    status = await proc.wait()
    if status.code != 0:
        detail = one_line(err.decode(errors="replace"), 300) or f"exit status {status.code}"
        raise OperationFailed(f"tar in the guest failed: {detail}")


async def pull(agent: AgentClient, vm: str, src: str, dst: str, progress: Progress,
               disk: Path | None = None) -> int:
    """Guest src -> host dst (into it when it is a directory); returns the tar bytes read.
    `disk`: the VM's payload disk file, the fast way when the guest can use it."""
    target = Path(dst)
    into = target.is_dir()
    if not into and not target.parent.is_dir():
        raise NotFound(f"{_shown(str(target.parent))} is not a directory on the host")
    answer = await payload.probe(agent, f"{_PROBE_SRC}; {payload.PROBE}; {payload.PROBE_FILE}", src)
    if not answer or answer[0] != "exists":
        raise NotFound(f"{vm}:{_shown(src)} does not exist in the guest")
    total = int(answer[1]) if len(answer) > 1 and answer[1].isascii() and answer[1].isdigit() \
        and len(answer[1]) < 16 else None
    name = os.path.basename(src)
    dev = payload.device(answer)
    regular = payload.regular_file(answer)
    if regular is not None and dev is not None:
        async with pdisk.claim(disk, regular[0]) as claimed:
            if claimed is not None:  # one file: no tar on either side
                await payload.guest_write_file(agent, dev, src)
                dest = target / name if into else target
                await claimed.run(pdisk.copy_out, claimed, regular[0], dest, regular[1])
                progress(regular[0], total)
                return regular[0]
    workdir = target if into else Path(tempfile.mkdtemp(prefix=".banger-cp-", dir=target.parent))
    try:
        async with pdisk.claim(disk if dev and "tar" in answer[1:] else None, total) as claimed:
            if claimed is not None and dev is not None:
                await payload.guest_write(agent, dev, os.path.dirname(src) or "/", name)
                source = pdisk.read_chunks(claimed)
            elif "tar" in answer[1:]:
                source = _tar_out(agent, src)
            else:
                source = agent.get(src, max_bytes=LIMITS.stream_bytes)
            read = await _extract(source, vm, src, name, workdir, progress, total)
        if not into:
            _move_into_place(workdir / name, target)
    finally:
        if not into:
            shutil.rmtree(workdir, ignore_errors=True)
    return read


def _move_into_place(made: Path, target: Path) -> None:
    if not os.path.lexists(made):
        raise OperationFailed("the guest's tar held nothing under the copied name")
    if target.is_dir() and not target.is_symlink():
        raise InvalidArgument(f"{_shown(str(target))} appeared as a directory during the copy")
    os.replace(made, target)  # a file or link at target is replaced, never written through


async def _tar_out(agent: AgentClient, src: str) -> AsyncIterator[bytes]:
    parent, name = os.path.split(src)
    proc = await agent.exec([*_GUEST_TAR_OUT, parent or "/", "--", name])
    errors = asyncio.create_task(payload.keep(proc.stderr))
    read, done = 0, False
    try:
        while chunk := await proc.stdout.read():
            read += len(chunk)
            if read > LIMITS.stream_bytes:
                raise OperationFailed(f"the guest's tar of {_shown(src)} is over the "
                                      f"{LIMITS.stream_bytes >> 30} GiB cap")
            yield chunk
        status, err = await proc.wait(), await errors
        done = True
        if status.code != 0:
            detail = one_line(err.decode(errors="replace"), 300) or f"exit status {status.code}"
            raise OperationFailed(f"tar in the guest failed: {detail}")
    finally:
        if not done:
            proc.kill()
            errors.cancel()


async def _extract(chunks: AsyncIterator[bytes], vm: str, src: str, name: str, workdir: Path,
                   progress: Progress, total: int | None) -> int:
    pipe = Pipe()
    origin = f"the tar {vm} sent for {_shown(src)}"

    def select(member: str, _m: tarfile.TarInfo) -> str | None:
        # Only the copied entry and what is under it; anything else the guest adds is skipped.
        return member if member == name or member.startswith(name + "/") else None

    def extract() -> None:
        try:
            with Extractor(workdir, origin, LIMITS) as ex:
                reader: IO[bytes] = PipeReader(pipe)  # type: ignore[assignment]  # read() is all it uses
                ex.apply(reader, select=select, decompress=False)
        except OSError as exc:
            raise OperationFailed(f"cannot write {_shown(exc.filename or str(workdir))} on "
                                  f"the host: {exc.strerror}") from None
        finally:
            pipe.closed.set()  # the loop stops feeding (early end or failure)

    job = asyncio.create_task(asyncio.to_thread(extract))
    job.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen, even if not awaited
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            progress(read, total)
            try:
                await asyncio.to_thread(pipe.put, chunk)
            except Closed:
                break  # the extractor ended: its outcome is below
        else:
            with contextlib.suppress(Closed):
                await asyncio.to_thread(pipe.put, None)
    except BaseException:
        pipe.closed.set()  # the extractor thread sees it and ends
        raise
    await job
    return read
