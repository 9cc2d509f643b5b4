"""docs/api.md's examples run as written against a real VM, and print what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as banger:
        yield banger


def run(b: Banger, code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], env=b.env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_sync_example_creates_streams_exports_and_deletes(b: Banger) -> None:
    out = run(b, examples()[0])
    assert "api-demo running\nline 1\nline 2\nline 3\nexit code 3\n" in out
    assert "1 file(s) changed" in out
    assert b.run("vm", "list", "--json", check=True).stdout.strip() == "[]"


def test_the_async_example_runs_commands_concurrently(b: Banger) -> None:
    assert run(b, examples()[1]) == "[b'0\\n', b'1\\n', b'2\\n']\n"
