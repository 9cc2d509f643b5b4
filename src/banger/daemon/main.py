"""bangerd entry point: single-instance lock, socket setup, signal handling, clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from typing import IO

from banger import __version__
from banger.artifacts import Artifacts, cleanup_leftovers
from banger.config import Config, load_config
from banger.daemon.operations_repo import OperationRepo
from banger.daemon.oplog import setup_logging
from banger.daemon.state import Daemon
from banger.errors import BangerError
from banger.paths import Paths, resolve_paths
from banger.permissions import make_install_private
from banger.rpc import wire
from banger.rpc.methods import testing
from banger.store import Store

log = logging.getLogger("banger.daemon")


def _load_handlers(*, test_methods: bool) -> None:
    """Importing a handler module registers its methods."""
    from banger.daemon.handlers import (  # noqa: F401
        agents,
        cp,
        exec,
        images,
        kernels,
        net,
        pool,
        sessions,
        snapshots,
        system,
        templates,
        ui,
        vms,
        workspace,
    )

    if test_methods:
        from banger.daemon.handlers import testing  # noqa: F401


def acquire_lock(paths: Paths) -> IO[str] | None:
    """Hold an exclusive flock for the daemon's lifetime; None if another daemon holds it."""
    lock = open(paths.daemon_lock, "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def build_daemon(paths: Paths, config: Config, store: Store) -> Daemon:
    from banger.vmm.select import select_backend
    from banger.vms.manager import VmManager

    artifacts = Artifacts(paths, config)
    manager = VmManager(paths, config, store, artifacts, select_backend(config))
    manager.templates.cleanup_staging()  # half-built templates of a killed daemon
    manager.templates.collect_disks()
    return Daemon(paths, config, store, artifacts, manager)


async def serve(daemon: Daemon) -> None:
    from banger.daemon.handlers.ui import stop_ui
    from banger.daemon.server import handle_connection
    from banger.dns.publish import start as start_dns
    from banger.vms.monitor import reconcile, watch

    await reconcile(daemon.vms)  # before serving: no request may see pre-restart state
    sock_path = daemon.paths.socket
    # Holding the lock proves any socket file left here belongs to a dead daemon.
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: handle_connection(daemon, r, w), path=str(sock_path),
            limit=wire.MAX_REQUEST_LINE,
        )
    finally:
        os.umask(old_umask)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.shutdown.set)
    log.info("bangerd %s listening on %s (pid %d)", __version__, sock_path, os.getpid())
    watcher = asyncio.create_task(watch(daemon.vms))
    pool = asyncio.create_task(daemon.vms.pool.run())  # refills the warm pool in the background
    stop_dns = await start_dns(daemon.config.dns_listen, daemon.vms.repo)  # own port or zone file
    async with server:
        await daemon.shutdown.wait()
        log.info("shutting down")
        server.close()
        watcher.cancel()
        pool.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pool  # a refill under way undoes itself first
        await daemon.vms.pool.shutdown()  # pooled clones go with the daemon
        stop_dns()
        await stop_ui()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bangerd", description="banger daemon")
    parser.add_argument("--detached", action="store_true", help="log to the state dir log file")
    args = parser.parse_args(argv)
    os.umask(0o077)  # disks, keys, the database and logs: readable by this user only
    paths = resolve_paths()
    try:
        paths.ensure()
        config = load_config(paths)
    except BangerError as exc:
        print(f"bangerd: error: {exc}", file=sys.stderr)
        return 1
    setup_logging(os.environ.get("BANGER_LOG_LEVEL", config.log_level),
                  paths.daemon_log if args.detached else None)
    lock = acquire_lock(paths)
    if lock is None:
        print("bangerd: another daemon is already running", file=sys.stderr)
        return 0
    try:
        store = Store(paths.db_file)
        applied = store.migrate()
        if applied:
            log.info("applied migrations %s", applied)
        if OperationRepo(store).interrupt_unfinished():
            log.info("marked operations of a previous daemon that never finished as interrupted")
        _load_handlers(test_methods=os.environ.get(testing.SWITCH) == "1")
        for leftover in cleanup_leftovers(paths):
            log.info("removed leftover %s", leftover)
        make_install_private(paths)
        asyncio.run(serve(build_daemon(paths, config, store)))
    except BangerError as exc:
        log.error("%s", exc)
        return 1
    finally:
        lock.close()
    return 0
