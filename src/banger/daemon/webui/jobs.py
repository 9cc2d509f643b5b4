"""Long operations the UI starts (create, pull, delete): run as daemon tasks through the same
handlers the RPC methods use, recorded in the operations history, their stages kept for the
progress pages, cancellable from the operations page."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from banger.daemon.context import Context
from banger.daemon.operations_repo import OperationRepo
from banger.daemon.oplog import current_op
from banger.daemon.state import Daemon
from banger.errors import BangerError, Cancelled, InternalError
from banger.rpc import wire
from banger.textsafe import one_line

log = logging.getLogger("banger.daemon.webui")
MAX_STAGES = 200  # a download's fractions replace one line; this bounds the rest
KEEP_FINISHED = 50  # finished jobs kept for their pages; older ones are in the history only


@dataclass
class Stage:
    stage: str
    fraction: float | None
    message: str


@dataclass
class Job:
    op_id: str
    method: str
    title: str
    stages: list[Stage] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    state: str = "running"  # running | done | failed | cancelled
    error: str | None = None
    done_url: str | None = None  # where the page goes once the job is done
    version: int = 0  # bumped on every change: progress streams send when it moves
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        last = self.stages[-1] if self.stages else None
        if last is not None and last.stage == stage and (fraction is not None
                                                         or last.fraction is not None):
            self.stages[-1] = Stage(stage, fraction, message or last.message)
        elif len(self.stages) < MAX_STAGES:
            self.stages.append(Stage(stage, fraction, one_line(message, 300)))
        self.version += 1

    @property
    def percent(self) -> int | None:
        last = self.stages[-1] if self.stages else None
        if last is None or last.fraction is None:
            return None
        return max(0, min(100, round(last.fraction * 100)))


class _NoWriter:
    """The RPC Context's writer for a job with no RPC client: it is always closed."""

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


class JobContext(Context):
    """A handler's context whose progress and info lines go to a Job instead of a socket."""

    job: Job

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        self.job.progress(stage, fraction, message)

    def info(self, message: str) -> None:
        if len(self.job.info) < 20:
            self.job.info.append(one_line(message, 300))
        self.job.version += 1


Work = Callable[[JobContext], Awaitable[str | None]]  # returns the URL to show when done


class Jobs:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.jobs: dict[str, Job] = {}

    def get(self, op_id: str) -> Job | None:
        return self.jobs.get(op_id)

    def start(self, method: str, title: str, work: Work) -> Job:
        job = Job(wire.new_op_id(), method, title)
        ctx = JobContext(self.daemon, job.op_id, method, cast(asyncio.StreamWriter, _NoWriter()))
        ctx.job = job
        ops = OperationRepo(self.daemon.store)

        async def body() -> None:
            current_op.set(job.op_id)
            log.info("web UI: %s", title)
            ops.start(job.op_id, method)
            error: BangerError | None = None
            try:
                job.done_url = await work(ctx)
            except BangerError as exc:
                error = exc
            except asyncio.CancelledError:
                why = "the daemon is shutting down" if self.daemon.shutdown.is_set() else \
                    "cancelled from the web UI"
                error = Cancelled(f"operation cancelled: {why}")
            except Exception as exc:
                log.exception("web UI job failed")
                error = InternalError(f"internal error: {exc}; see `banger daemon logs`")
            finally:
                job.state = "done" if error is None else (
                    "cancelled" if isinstance(error, Cancelled) else "failed")
                job.error = error.message if error else None
                job.version += 1
                ops.finish(job.op_id, job.state, job.error)

        self._forget_old()
        job.task = asyncio.create_task(body(), name=f"webui-{job.op_id}")
        self.daemon.tasks.add(job.task)
        job.task.add_done_callback(self.daemon.tasks.discard)
        self.jobs[job.op_id] = job
        return job

    def cancel(self, op_id: str) -> bool:
        job = self.jobs.get(op_id)
        if job is None or job.task is None or job.task.done():
            return False
        job.task.cancel()
        return True

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == "running"]

    def _forget_old(self) -> None:
        finished = sorted((j for j in self.jobs.values() if j.state != "running"),
                          key=lambda j: j.started)
        for job in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            self.jobs.pop(job.op_id, None)
