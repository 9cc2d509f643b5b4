"""`vm acp`'s stdio: the editor's messages in, the agent's out, through banger.agents.acp_guard."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from banger.agents.acp_guard import Lines, from_agent, from_editor
from banger.cli.terminal import Sender, pump_stdin
from banger.durable import write_all
from banger.rpc.client import Call
from banger.textsafe import TerminalFilter


def bridge(call: Call, stdin: int | None = None, stdout: int = 1, stderr: int = 2) -> int:
    """Run until the agent ends; returns its exit code (128 + signal when killed)."""
    sender = Sender(call)

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        sender.send({"type": "signal", "signal": sig})

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, on_signal)
    agent_lines = Lines()
    # The guest's stderr is for a person reading the editor's log: no escape sequences.
    errors = TerminalFilter()
    try:
        editor_lines = Lines()
        threading.Thread(target=pump_stdin, daemon=True, args=(
            sender, lambda data: [from_editor(line) for line in editor_lines.feed(data)],
            stdin)).start()
        for event in call.events():
            if event.get("type") != "data":
                continue
            if event.get("stream") != "stdout":
                write_all(stderr, errors.feed(event["data"]))
                continue
            for line in agent_lines.feed(event["data"]):
                to_editor, to_agent = from_agent(line)
                if to_editor is not None:
                    write_all(stdout, to_editor)
                if to_agent is not None:
                    sender.send_data(to_agent)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        call.close()
    result = call.result or {}
    return int(result.get("code", 1))


__all__ = ["bridge"]
