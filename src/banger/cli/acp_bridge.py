"""`vm acp`'s stdio: the editor's messages in, the agent's out, through banger.agents.acp_guard."""

from __future__ import annotations

import signal
import threading

from banger.agents.acp_guard import Lines, from_agent, from_editor
from banger.cli.terminal import Sender, exit_code, forward_signal, pump_stdin, running
from banger.durable import write_all
from banger.rpc.client import Call
from banger.textsafe import TerminalFilter


def bridge(call: Call, stdin: int | None = None, stdout: int = 1, stderr: int = 2) -> int:
    """Run until the agent ends; returns its exit code (128 + signal when killed)."""
    sender = Sender(call)
    agent_lines, editor_lines = Lines(), Lines()
    # The guest's stderr is for a person reading the editor's log: no escape sequences.
    errors = TerminalFilter()
    forward = forward_signal(sender)
    with running(call, {signal.SIGINT: forward, signal.SIGTERM: forward}):
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
    return exit_code(call)


__all__ = ["bridge"]
