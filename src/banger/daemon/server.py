"""Accept connections, decode one request each, run its handler, stream events back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import Any

import msgspec

from banger import textsafe
from banger.daemon.context import Context
from banger.daemon.operations_repo import OperationRepo
from banger.daemon.oplog import current_op
from banger.daemon.registry import METHODS, Registered
from banger.daemon.state import Daemon
from banger.errors import (
    BadVersion,
    BangerError,
    Cancelled,
    InternalError,
    InvalidArgument,
    UnknownMethod,
)
from banger.rpc import wire
from banger.rpc.peer import peer_uid

log = logging.getLogger("banger.rpc")
_OP_ID = re.compile(r"^op-[0-9a-f]{8}$")


INBOX_LINES = 8  # client lines queued for a handler; more wait in the socket (backpressure)


def _shown(value: Any, limit: int = 60) -> str:
    """A client-sent value in an error message: one line, capped."""
    return textsafe.one_line(repr(value), limit)


def _parse_request(line: bytes) -> tuple[str, Registered, msgspec.Struct]:
    """Validate the envelope; the op id is set on the contextvar before anything can fail."""
    try:
        msg = wire.decode(line)
    except ValueError as exc:
        raise InvalidArgument(f"malformed request: {textsafe.one_line(str(exc), 200)}") from exc
    op_id = msg.get("op_id")
    if isinstance(op_id, str) and _OP_ID.fullmatch(op_id):
        current_op.set(op_id)
    version = msg.get("v")
    if type(version) is not int or version != wire.VERSION:
        raise BadVersion(
            f"client speaks RPC v{_shown(version, 20)}, this daemon speaks v{wire.VERSION}; "
            "restart it with `banger daemon stop` and retry"
        )
    name = msg.get("method")
    entry = METHODS.get(name) if isinstance(name, str) else None
    if entry is None or not isinstance(name, str):
        raise UnknownMethod(f"unknown method {_shown(name)}; the daemon may be older than this CLI")
    try:
        params = msgspec.convert(msg.get("params") or {}, entry.method.params)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(
            f"invalid params for {name}: {textsafe.one_line(str(exc), 300)}") from exc
    return name, entry, params


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """The first line, or b"" on a hang-up; a line over the cap is refused unread."""
    try:
        return await reader.readline()
    except ConnectionError:
        return b""
    except ValueError as exc:  # asyncio drops what it buffered once a line passes its limit
        raise InvalidArgument(f"request line longer than {wire.MAX_REQUEST_LINE >> 20} MiB; "
                              "send a smaller request") from exc


async def _pump_client(reader: asyncio.StreamReader, ctx: Context, task: asyncio.Task[Any]) -> None:
    """Forward client messages to the handler; a cancel or a hang-up cancels the operation.

    The inbox is bounded: input a handler does not read stops being read from the socket.
    A message with a "len" gets its payload (at most wire.MAX_DATA, read exactly) as bytes in
    "data"; a bad length ends the operation with invalid_argument, the stream can't resync.
    """
    while True:
        try:
            line = await reader.readline()
        except (ConnectionError, ValueError):
            line = b""
        if not line.endswith(b"\n"):
            task.cancel("client disconnected")
            return
        try:
            msg = wire.decode(line)
        except ValueError:
            continue
        try:
            size = wire.payload_length(msg)
        except ValueError as exc:
            ctx.client_error = InvalidArgument(f"bad input frame: {exc}")
            task.cancel("bad input frame")
            return
        if size is not None:
            try:
                msg["data"] = await reader.readexactly(size)
            except (ConnectionError, asyncio.IncompleteReadError):
                task.cancel("client disconnected")
                return
        elif "data" in msg:
            del msg["data"]  # input bytes come only as a payload, never inside the JSON
        if msg.get("type") == "cancel":
            task.cancel("cancelled by the client")
            return
        await ctx.inbox.put(msg)


def _record_start(daemon: Daemon, op_id: str, entry: Registered) -> None:
    if entry.method.long:
        OperationRepo(daemon.store).start(op_id, entry.method.name)


def _record_end(daemon: Daemon, op_id: str, entry: Registered, error: BangerError | None) -> None:
    if entry.method.long:
        state = "done" if error is None else ("cancelled" if isinstance(error, Cancelled) else "failed")
        OperationRepo(daemon.store).finish(op_id, state, error.message if error else None)


async def _run(daemon: Daemon, ctx: Context, entry: Registered, params: Any,
               reader: asyncio.StreamReader) -> Any:
    task: asyncio.Task[Any] = asyncio.ensure_future(entry.handler(ctx, params))
    pump = asyncio.create_task(_pump_client(reader, ctx, task))
    daemon.running[ctx.op_id] = task
    try:
        return await task
    except asyncio.CancelledError as exc:
        if task.cancelled() and ctx.client_error is not None:
            raise ctx.client_error from exc
        if task.cancelled() and not daemon.shutdown.is_set():
            raise Cancelled("operation cancelled") from exc
        if task.cancelled():
            raise Cancelled("operation cancelled: the daemon is shutting down") from exc
        raise
    finally:
        if daemon.running.get(ctx.op_id) is task:
            del daemon.running[ctx.op_id]
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    """Only the daemon's own user may use it, even if the socket's mode lets others connect."""
    try:
        uid = peer_uid(writer.get_extra_info("socket"))
    except OSError as exc:
        log.warning("refused a connection whose peer is unknown: %s", exc.strerror)
        return False
    if uid != os.geteuid():
        log.warning("refused a connection from uid %d: this daemon serves uid %d only",
                    uid, os.geteuid())
        return False
    return True


async def handle_connection(daemon: Daemon, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    if not _peer_allowed(writer):
        writer.close()
        return
    entry: Registered | None = None
    error: BangerError | None = None
    op_id = "-"
    current_op.set(wire.new_op_id())  # replaced by the client's own once its request parses
    try:
        line = await _read_request(reader)
        if not line:
            return
        name, entry, params = _parse_request(line)
        op_id = current_op.get()
        log.info("%s start", name)
        ctx = Context(daemon, op_id, name, writer, inbox=asyncio.Queue(INBOX_LINES))
        _record_start(daemon, op_id, entry)
        result = await _run(daemon, ctx, entry, params, reader)
        writer.write(wire.encode({"type": "result", "op_id": op_id, "result": _plain(result)}))
        log.info("%s done", name)
    except BangerError as exc:
        error = exc
        op_id = current_op.get()
        log.warning("%s: %s", entry.method.name if entry else "request", exc.message)
        writer.write(wire.encode({"type": "error", "op_id": op_id,
                                  "error": {**exc.to_wire(), "op_id": op_id}}))
    except Exception as exc:
        op_id = current_op.get()
        log.exception("internal error")
        error = InternalError(f"internal error: {exc}; see `banger daemon logs`")
        writer.write(wire.encode({"type": "error", "op_id": op_id,
                                  "error": {**error.to_wire(), "op_id": op_id}}))
    finally:
        if entry is not None:
            with contextlib.suppress(Exception):
                _record_end(daemon, op_id, entry, error)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await writer.drain()
            writer.close()
            await writer.wait_closed()


def _plain(value: Any) -> Any:
    """Results may be msgspec Structs; the wire wants plain JSON values."""
    return msgspec.to_builtins(value)
