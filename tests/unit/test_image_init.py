"""The guest init wrapper is plain POSIX sh and lint-clean."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from banger.guest import INIT_PATH, guest_files
from banger.runner import run

INIT = Path(str(resources.files("banger.guest").joinpath("files/init")))


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_parses(shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed")
    run([shell, "-n", INIT])


def test_shellcheck() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    res = run(["shellcheck", "-s", "sh", INIT], check=False)
    assert res.ok, res.stdout


def test_contract() -> None:
    text = INIT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "sleep" not in text  # boot speed: nothing waits
    for stage in ("mounts", "root", "agent"):
        assert f'say "{stage}"' in text
    for needed in ("banger.hostname", "resize2fs", "--pid1", "exec \"$INIT\"", "setsid",
                   "127.0.1.1", "/var/lib/banger"):
        assert needed in text


def test_injected_as_executable() -> None:
    files = {f.path: f for f in guest_files()}  # a missing packaged file fails here
    assert files[INIT_PATH].mode == 0o755
    assert files[INIT_PATH].data == INIT.read_bytes()
