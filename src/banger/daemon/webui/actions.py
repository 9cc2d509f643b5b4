"""Lifecycle buttons: the same VmManager calls the `vm.*` handlers make, kept in the operations
history like an RPC operation, and shielded so a closed tab does not cancel a half-done stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from banger.daemon.operations_repo import OperationRepo
from banger.daemon.oplog import current_op
from banger.daemon.state import Daemon
from banger.errors import BangerError, Cancelled, InternalError
from banger.progress import no_progress
from banger.rpc import wire
from banger.vms.model import VmRecord, VmState

log = logging.getLogger("banger.daemon.webui")

# action -> (the RPC method it stands for, whether it needs a confirmation, button label)
ACTIONS: dict[str, tuple[str, bool, str]] = {
    "start": ("vm.start", False, "Start"),
    "stop": ("vm.stop", False, "Stop"),
    "save": ("vm.stop", False, "Stop and save memory"),
    "restart": ("vm.restart", False, "Restart"),
    "kill": ("vm.kill", True, "Kill"),
    "delete": ("vm.delete", True, "Delete"),
}
STARTABLE = (VmState.CREATED, VmState.STOPPED, VmState.ERROR)


def shown(action: str, state: str) -> bool:
    """Which buttons a VM in this state gets: start when it is down, the rest when it runs."""
    if action == "delete":
        return True
    if action == "start":
        return state in STARTABLE
    return state == VmState.RUNNING


def _call(daemon: Daemon, action: str, vm_id: str) -> Callable[[], Awaitable[VmRecord]]:
    vms = daemon.vms

    async def restart() -> VmRecord:
        await vms.stop(vm_id, no_progress)
        return await vms.start(vm_id, no_progress)

    calls: dict[str, Callable[[], Awaitable[VmRecord]]] = {
        "start": lambda: vms.start(vm_id, no_progress),
        "stop": lambda: vms.stop(vm_id, no_progress),
        "save": lambda: vms.stop(vm_id, no_progress, save=True),
        "restart": restart,
        "kill": lambda: vms.kill(vm_id),
        "delete": lambda: vms.delete(vm_id, force=True, progress=no_progress),
    }
    return calls[action]


async def run_action(daemon: Daemon, action: str, vm: VmRecord) -> str:
    """Run one action on vm; returns its op id. Raises the BangerError it failed with."""
    method = ACTIONS[action][0]
    op_id = wire.new_op_id()
    ops = OperationRepo(daemon.store)

    async def body() -> None:
        current_op.set(op_id)
        log.info("web UI: %s %s", action, vm.name)
        ops.start(op_id, method)
        error: BangerError | None = None
        try:
            await _call(daemon, action, vm.id)()
        except BangerError as exc:
            error = exc
            raise
        except asyncio.CancelledError:
            error = Cancelled("operation cancelled: the daemon is shutting down")
            raise
        except Exception as exc:
            log.exception("web UI action failed")
            error = InternalError(f"internal error: {exc}; see `banger daemon logs`")
            raise error from exc
        finally:
            state = "done" if error is None else (
                "cancelled" if isinstance(error, Cancelled) else "failed")
            ops.finish(op_id, state, error.message if error else None)

    task = asyncio.create_task(body())
    daemon.tasks.add(task)
    task.add_done_callback(daemon.tasks.discard)
    try:
        await asyncio.shield(task)
    except BangerError as exc:
        exc.op_id = op_id
        raise
    return op_id
