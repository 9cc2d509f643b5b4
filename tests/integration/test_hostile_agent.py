"""A guest that replaces its own agent: root in the VM rewrites the agent's operations, and
the host must hold — one clear error line, no traceback, the daemon's memory bounded, and the
daemon still serving. (tests/unit/test_agent_hostile.py covers each frame in detail.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm]
VM = "rogue"
FLOOD_MIB = 256

# Appended to the guest agent's modules: the later definitions replace the real operations.
HOSTILE_EXEC = f"""

def op_exec(channel, params):
    chunk = b"\\x1b]0;owned\\x07" * 5000
    for _ in range({FLOOD_MIB} * (1 << 20) // len(chunk)):  # never waits for the host's credit
        channel.send_data(proto.STDOUT, chunk)
    return {{"exit_code": "0; rm -rf /"}}
"""
HOSTILE_PORTS = """

def op_ports(channel, params):
    return {"ports": [{"proto": "tcp", "address": "0.0.0.0", "port": 70000, "pid": 1,
                       "process": "\\x1b[2J[red]x[/]", "vm": "someone-else"}]}
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def rogue() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        b.run("vm", "create", "--name", VM, "--cold", check=True, timeout=300)
        for module, code in (("exec_ops.py", HOSTILE_EXEC), ("system_ops.py", HOSTILE_PORTS)):
            b.run("vm", "exec", "-i", VM, "--", "sh", "-c",
                  f"cat >> /usr/local/lib/banger/agent/{module}", input=code, check=True)
        b.run("vm", "stop", VM, check=True, timeout=120)
        b.run("vm", "start", "--cold", VM, check=True, timeout=300)
        yield b


def one_line_error(stderr: str, *says: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "\x1b" not in stderr, stderr
    assert all(s in lines[0] for s in says), stderr


def test_an_agent_that_ignores_flow_control_gets_its_request_ended(rogue: Banger) -> None:
    pid = rogue.daemon_pid()
    assert pid is not None
    before = rss_mib(pid)
    res = rogue.run("vm", "exec", VM, "--", "true", timeout=300)
    assert res.returncode == 1, res.stderr
    one_line_error(res.stderr, "window")
    assert rss_mib(pid) - before < 64, "the flood grew the daemon"  # it sent 256 MiB
    assert rogue.run("vm", "list", check=True).stdout.count(VM) == 1  # still serving


def test_an_agent_that_lies_about_ports_is_one_clear_error(rogue: Banger) -> None:
    res = rogue.run("vm", "ports", VM, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    one_line_error(res.stderr, "the guest agent sent an invalid")
    assert "someone-else" not in res.stdout + res.stderr
