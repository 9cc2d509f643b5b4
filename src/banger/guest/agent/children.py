"""Child processes in the guest agent: one reaper thread collects every exit status.

Stdlib-only, Python >= 3.7, part of the agent package shipped into guests.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any


UNCLAIMED_STATUS_LIMIT = 256


class Reaper:
    """Collects every child's exit status and hands it to whoever spawned that pid.

    waitpid(-1) also reaps orphans re-parented to us, which PID 1 must do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, ExitWaiter] = {}
        self._unclaimed: dict[int, int] = {}
        self._children_exist = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def watch(self, pid: int) -> ExitWaiter:
        waiter = ExitWaiter()
        with self._lock:
            if pid in self._unclaimed:
                waiter.deliver(self._unclaimed.pop(pid))
            else:
                self._waiters[pid] = waiter
        self._children_exist.set()
        return waiter

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._children_exist.wait(1.0)  # orphans may still be re-parented to us
                self._children_exist.clear()
                continue
            except OSError:
                continue
            self._deliver(pid, status)

    def _deliver(self, pid: int, status: int) -> None:
        with self._lock:
            waiter = self._waiters.pop(pid, None)
            if waiter is None:
                if len(self._unclaimed) >= UNCLAIMED_STATUS_LIMIT:
                    self._unclaimed.pop(next(iter(self._unclaimed)))
                self._unclaimed[pid] = status
                return
        waiter.deliver(status)


class ExitWaiter:
    def __init__(self) -> None:
        self.status = 0
        self.done = threading.Event()

    def deliver(self, status: int) -> None:
        self.status = status
        self.done.set()

    def wait(self) -> int:
        self.done.wait()
        return self.status


def exit_result(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"exit_code": None, "signal": os.WTERMSIG(status)}
    return {"exit_code": os.WEXITSTATUS(status), "signal": None}


def kill_group(pid: int) -> None:
    """Kill the whole process group: exec children are session leaders."""
    import signal

    try:  # noqa: SIM105 (contextlib would be one more import in the guest)
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # already gone

