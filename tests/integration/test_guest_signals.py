"""Commands the agent starts get default signal dispositions: Ctrl-C works in the VM.

On the systemd image the init wrapper starts the agent as a background job of a non-interactive
shell, which ignores SIGINT and SIGQUIT; every command then inherited that.
"""

from __future__ import annotations

import pytest

from tests.conftest import BIN
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]

DEFAULT = "debian-bookworm"
VM = "sig"


@pytest.mark.parametrize("image", [SLIM, DEFAULT])
def test_commands_get_default_signals_and_ctrl_c_interrupts_sleep(image: str) -> None:
    pexpect = pytest.importorskip("pexpect")
    with vm_lock(), vm_home(SLIM, image) as b:
        b.run("vm", "create", "--name", VM, "--image", image, check=True, timeout=600)
        res = b.run("vm", "exec", VM, "--", "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status",
                    timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]
        child = pexpect.spawn(str(BIN / "banger"), ["vm", "exec", "-t", VM, "--", "sh", "-i"],
                              env={**b.env, "TERM": "xterm"}, encoding="utf-8", timeout=60)
        try:
            child.sendline("echo ready-$((6*7))")
            child.expect("ready-42")
            # Quoted so the echoed command line does not match: "started" means sleep is next.
            child.sendline("sh -c 'echo sta\"\"rted; exec sleep 600'")
            child.expect("started")
            child.sendcontrol("c")
            child.sendline("echo after-$?")
            child.expect("after-130", timeout=30)
            child.sendline("exit 3")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 3
