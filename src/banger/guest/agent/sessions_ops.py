"""Guest agent operations on sessions: start, list, show, signal, remove, logs, write, attach.

Stdlib-only, Python >= 3.7. The sessions themselves live in sessions.py and outlive every channel:
aborting a logs, write or attach channel (the host went away) only ends that request.
"""

from __future__ import annotations

import threading

from . import protocol as proto
from .core import Aborted, AgentError
from .sessions import check_name, registry
from .sessions_log import bounds, read_at, tail_offset

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any

    from .session import Channel
    from .sessions import Live

MAX_GRACE = 600.0


def _int(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AgentError(proto.E_BAD_REQUEST, f"{key} must be an integer in {low}..{high}")
    return value


def op_session_start(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    return registry(channel.session.agent).start(params)


def op_session_list(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    reg = registry(channel.session.agent)
    found = []
    for name in reg.names():
        try:
            found.append(reg.info(name))
        except AgentError:
            continue  # removed meanwhile, or a half-made directory
    return {"sessions": found}


def op_session_show(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    return registry(channel.session.agent).info(check_name(params.get("name")))


def op_session_signal(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    """signal to the session's process group; with grace > 0, SIGKILL if still running then."""
    signum = _int(params, "signal", 15, 1, 64)
    grace = params.get("grace", 0)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= MAX_GRACE:
        raise AgentError(proto.E_BAD_REQUEST, f"grace must be 0..{MAX_GRACE:g} seconds")
    return registry(channel.session.agent).stop(check_name(params.get("name")), signum,
                                                float(grace))


def op_session_remove(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    return registry(channel.session.agent).remove(check_name(params.get("name")),
                                                  bool(params.get("force")))


def stream_log(channel: Channel, directory: str, live: Live | None, offset: int,
               follow: bool) -> int:
    """Send the log from offset on STDOUT; with follow, until the session has exited and all
    of its output is sent, else up to where the log ended when asked. Returns the end offset."""
    stop = None if follow else bounds(directory)[1]  # a running session keeps appending
    while True:
        want = proto.DATA_CHUNK if stop is None else min(proto.DATA_CHUNK, max(stop - offset, 0))
        at, data = read_at(directory, offset, want) if want else (offset, b"")
        offset = at
        if data:
            channel.send_stream(proto.STDOUT, data)
            offset += len(data)
            continue
        if not follow or live is None:
            return offset
        with live.cond:
            if live.end <= offset:
                if live.exited:
                    return offset
                live.cond.wait(0.5)
        if channel.closed:
            raise Aborted()


def op_session_logs(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    reg = registry(channel.session.agent)
    name = check_name(params.get("name"))
    info = reg.info(name)
    directory = reg.directory(name)
    lines = params.get("lines")
    if lines is not None:
        offset = tail_offset(directory, _int(params, "lines", 0, 0, 1 << 24))
    else:
        offset = _int(params, "offset", 0, 0, 2**63 - 1)
    first = read_at(directory, offset, 0)[0]
    live = reg.live.get(name) if info["state"] == "running" else None
    end = stream_log(channel, directory, live, offset, bool(params.get("follow")))
    return {"start": first, "end": end, "session": reg.info(name)}


def op_session_write(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    """DATA on STDIN goes to the session's stdin; close=true then ends its input."""
    live = registry(channel.session.agent).get_live(check_name(params.get("name")))
    total = 0
    while True:
        chunk = channel.inbox.get()
        if not chunk:
            break
        live.write_input(chunk)
        total += len(chunk)
        channel.consumed(len(chunk))
    if params.get("close"):
        live.close_input()
    return {"bytes": total}


def op_session_attach(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    """Live output (after the last `lines` lines) and, for the one writer, input and resize."""
    reg = registry(channel.session.agent)
    name = check_name(params.get("name"))
    info = reg.info(name)
    directory = reg.directory(name)
    offset = tail_offset(directory, _int(params, "lines", 0, 0, 1 << 24))
    live = reg.live.get(name) if info["state"] == "running" else None
    writer = False
    if live is not None and params.get("write"):
        with live.input_lock:
            if live.input_owner is None:
                live.input_owner = channel
                writer = True

    def release() -> None:
        if live is not None and live.input_owner is channel:
            live.input_owner = None

    channel.add_abort_hook(release)
    try:
        if writer and live is not None:
            _resize(live, params)
            channel.on_control = lambda message: _control(live, message)
            threading.Thread(target=_pump_input, args=(channel, live), daemon=True).start()
        else:
            channel.on_control = lambda message: None  # a reader's resize means nothing
            threading.Thread(target=_drain_input, args=(channel,), daemon=True).start()
        channel.send_event({"event": "started", "pid": info["pid"], "writer": writer})
        stream_log(channel, directory, live, offset, True)
    finally:
        release()
    return reg.info(name)


def _resize(live: Live, message: dict[str, Any]) -> None:
    from .exec_ops import set_winsize

    rows, cols = message.get("rows"), message.get("cols")
    if not live.tty or not isinstance(rows, int) or not isinstance(cols, int):
        return
    if not (0 < rows < 10000 and 0 < cols < 10000):
        raise proto.ProtocolError("rows and cols must be 1..9999")
    with live.input_lock:
        if live.in_fd >= 0:
            set_winsize(live.in_fd, rows, cols)


def _control(live: Live, message: dict[str, Any]) -> None:
    if message.get("type") != "resize":
        raise proto.ProtocolError(f"unknown control message {message.get('type')!r}")
    _resize(live, message)


def _pump_input(channel: Channel, live: Live) -> None:
    broken = False
    while True:
        try:
            chunk = channel.inbox.get()
        except Aborted:
            return
        if not chunk:
            return  # the host stopped typing; the session's input stays open
        if not broken:
            try:
                live.write_input(chunk)
            except AgentError:
                broken = True  # ended, or not reading: keep draining the host
        channel.consumed(len(chunk))


def _drain_input(channel: Channel) -> None:
    """A read-only attach: what the host sends is dropped (its window still moves)."""
    while True:
        try:
            chunk = channel.inbox.get()
        except Aborted:
            return
        if not chunk:
            return
        channel.consumed(len(chunk))


OPERATIONS = {
    "session.start": op_session_start,
    "session.list": op_session_list,
    "session.show": op_session_show,
    "session.signal": op_session_signal,
    "session.remove": op_session_remove,
    "session.logs": op_session_logs,
    "session.write": op_session_write,
    "session.attach": op_session_attach,
}

INPUT_STREAMS = {"session.write": proto.STDIN, "session.attach": proto.STDIN}
