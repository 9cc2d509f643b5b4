"""Shared fixtures: an isolated BANGER_HOME per test and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

BIN = Path(sys.executable).parent

# Property tests over hostile input: a few hundred examples in every run, many more in `make fuzz`.
settings.register_profile("default", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@dataclass
class Banger:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / "banger"), *args], input=input, capture_output=True,
                              text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"banger {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "banger"), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def show(self, vm: str) -> dict[str, Any]:
        """`banger vm show VM` as JSON."""
        return dict(json.loads(self.run("vm", "show", vm, check=True).stdout))

    @property
    def socket(self) -> Path:
        return self.home / "run" / "bangerd.sock"

    @property
    def log(self) -> Path:
        return self.home / "state" / "bangerd.log"

    def daemon_pid(self) -> int | None:
        try:
            return int((self.home / "run" / "bangerd.lock").read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def stop_daemon(self) -> None:
        pid = self.daemon_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            import time

            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def banger() -> Iterator[Banger]:
    # Short paths: a Unix socket path must fit in 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="bh-", dir="/tmp"))
    env = {**os.environ, "BANGER_HOME": str(home), "BANGER_LOG_LEVEL": "debug"}
    b = Banger(home, env)
    try:
        yield b
    finally:
        b.stop_daemon()
        shutil.rmtree(home, ignore_errors=True)
