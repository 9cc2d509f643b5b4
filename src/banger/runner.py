"""The one way banger runs a subprocess: argv lists, captured output, errors that say what failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.errors import OperationFailed

log = logging.getLogger("banger.run")

Arg = str | Path


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _argv(args: Sequence[Arg]) -> list[str]:
    return [str(a) for a in args]


def _failure(argv: list[str], code: int, stderr: str, what: str | None) -> OperationFailed:
    tail = " | ".join(line for line in stderr.strip().splitlines()[-3:])
    name = what or Path(argv[0]).name
    msg = f"{name} failed (exit {code})"
    return OperationFailed(f"{msg}: {tail}" if tail else msg, argv=shlex.join(argv))


def _finish(argv: list[str], code: int, out: bytes, err: bytes, check: bool,
            what: str | None) -> Result:
    result = Result(argv, code, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and not result.ok:
        raise _failure(argv, code, result.stderr, what)
    return result


def which(tool: str) -> str | None:
    return shutil.which(tool, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def run(
    args: Sequence[Arg],
    *,
    check: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    what: str | None = None,
) -> Result:
    """Run a command to completion and return its decoded output."""
    argv = _argv(args)
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv, input=input, capture_output=True, cwd=cwd, env=env, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise OperationFailed(f"{argv[0]} is not installed; run `banger doctor`") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(f"{what or argv[0]} timed out after {timeout:.0f}s") from exc
    return _finish(argv, proc.returncode, proc.stdout, proc.stderr, check, what)


async def arun(
    args: Sequence[Arg],
    *,
    check: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    what: str | None = None,
    pass_fds: Sequence[int] = (),
    new_session: bool = False,
) -> Result:
    """Async twin of run(): the child is killed if the caller is cancelled.

    `new_session`: the child leads a session of its own and the whole session is killed
    (a tool whose children outlive it and hold its pipes, like mmdebstrap's namespaces).
    """
    argv = _argv(args)
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            pass_fds=tuple(pass_fds),
            start_new_session=new_session,
        )
    except FileNotFoundError as exc:
        raise OperationFailed(f"{argv[0]} is not installed; run `banger doctor`") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except (asyncio.CancelledError, TimeoutError) as exc:
        if new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise OperationFailed(f"{what or argv[0]} timed out after {timeout:.0f}s") from exc
        raise
    assert proc.returncode is not None
    return _finish(argv, proc.returncode, out, err, check, what)


__all__ = ["Result", "arun", "run", "which"]
