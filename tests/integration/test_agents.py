"""Coding agents from the real npm registry (the one npm is configured with), shipped by banger
into real VMs: opencode answers an ACP `initialize` through `banger vm acp`, codex runs, a
second pull uses the cache, and a forwarded key reaches the agent only."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import BIN, Banger
from tests.polling import wait_until
from tests.vmtest import SLIM, cache_dir, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.timeout(1200)]

VM = "acpvm"
SECRET = "banger-test-secret-7f3a9c"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": 1, "clientCapabilities": {}}}


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as banger:
        # The agents' cache outlives the test home (opencode is 75 MB, codex 170 MB to fetch).
        shared = cache_dir() / "agents"
        shared.mkdir(parents=True, exist_ok=True)
        (banger.home / "cache").mkdir(exist_ok=True)
        (banger.home / "cache" / "agents").symlink_to(shared)
        banger.env["AGENT_TEST_KEY"] = SECRET
        yield banger


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agentrepo")
    (path / "hello.txt").write_text("hello from the host\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    return path


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def acp(b: Banger, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen([str(BIN / "banger"), "vm", "acp", VM, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=b.env)
    out: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    return proc, out


def initialize(proc: subprocess.Popen[str], out: queue.Queue[str]) -> dict[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(INITIALIZE) + "\n")
    proc.stdin.flush()
    line = out.get(timeout=600)  # the first run fetches, ships and boots
    answer: dict[str, Any] = json.loads(line)  # stdout's first line is the protocol, nothing else
    return answer


def finish(proc: subprocess.Popen[str], out: queue.Queue[str]) -> tuple[int, str, list[str]]:
    """Close the editor's side: the agent sees EOF and ends; banger exits with its code."""
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    code = proc.wait(timeout=120)
    rest = []
    while not out.empty():
        rest.append(out.get())
    return code, proc.stderr.read(), rest


def agent_env(b: Banger) -> str:
    """The environment of the guest's `opencode acp` process, read inside the guest."""
    script = ('for p in /proc/[0-9]*; do if tr "\\0" " " < $p/cmdline 2>/dev/null '
              '| grep -q "opencode acp"; then tr "\\0" "\\n" < $p/environ; '
              'echo "CWD=$(readlink $p/cwd)"; fi; done')
    return b.run("vm", "exec", VM, "--", "sh", "-c", script, check=True, timeout=60).stdout


def test_opencode_answers_acp_initialize_through_vm_acp(b: Banger, repo: Path) -> None:
    proc, out = acp(b, "--path", str(repo), "--pass-env", "AGENT_TEST_KEY")
    try:
        answer = initialize(proc, out)
        assert answer["id"] == 1 and answer["result"]["agentInfo"]["name"] == "OpenCode"
        assert answer["result"]["protocolVersion"] == 1
        wait_until(lambda: f"AGENT_TEST_KEY={SECRET}" in agent_env(b),
                   "the forwarded key in the agent's environment", timeout=60, interval=1)
        assert "CWD=/root/repo\n" in agent_env(b)  # it works in the shipped repo
    finally:
        code, err, rest = finish(proc, out)
    assert code == 0, err
    assert all(json.loads(line).get("jsonrpc") == "2.0" for line in rest)
    assert "ship" in err and "opencode" in err  # progress went to stderr
    shipped = b.run("vm", "exec", VM, "--", "cat", "hello.txt", check=True, timeout=60).stdout
    assert shipped == "hello from the host\n"
    # The key reached that process only: not the VM's record, not the daemon's log.
    assert SECRET not in json.dumps(b.show(VM))
    assert SECRET not in b.log.read_text()


def test_a_second_acp_reuses_the_vm_and_the_guest_copy(b: Banger) -> None:
    proc, out = acp(b)
    try:
        assert initialize(proc, out)["result"]["agentInfo"]["name"] == "OpenCode"
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "session/new",
                                     "params": {"cwd": "/root/repo", "mcpServers": []}}) + "\n")
        proc.stdin.flush()
        answer = json.loads(out.get(timeout=300))  # an editor's conversation starts
        assert answer["id"] == 2 and answer["result"]["sessionId"]
    finally:
        code, err, _ = finish(proc, out)
    assert code == 0, err
    assert "in the guest already" in err
    assert SECRET not in agent_env(b)  # not forwarded this time: not there


def test_codex_runs_in_a_vm(b: Banger) -> None:
    pulled = b.run("agent", "pull", "codex", check=True, timeout=900)
    assert "matched the registry's integrity sha512-" in pulled.stdout
    b.run("agent", "install", VM, "codex", check=True, timeout=900)
    version = b.run("vm", "exec", VM, "--", "codex", "--version", check=True, timeout=120)
    assert version.stdout.startswith("codex-cli ")
    listed = json.loads(b.run("agent", "list", "--json", check=True).stdout)
    rows = {r["name"]: r for r in listed}
    assert rows["codex"]["cached"] and not rows["codex"]["acp"] and rows["opencode"]["acp"]
    refused = b.run("vm", "acp", VM, "--agent", "codex")
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "codex has no ACP mode" in refused.stderr


def test_vm_run_agent_is_a_session_attach_comes_back_to(b: Banger, repo: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {**b.env, "TERM": "xterm-256color"}
    run = pexpect.spawn(str(BIN / "banger"), ["vm", "run", "--name", "runvm", str(repo),
                                              "--agent", "opencode"],
                        env=env, encoding="utf-8", timeout=600, dimensions=(30, 100))
    try:
        run.expect(r"attached; Ctrl-\] detaches")
        sessions = json.loads(b.run("vm", "session", "list", "runvm", "--json", check=True).stdout)
        assert [(s["state"], s["cwd"]) for s in sessions] == [("running", "/root/repo")]
        name = sessions[0]["name"]
        wait_until(lambda: "Ask anything" in screen(b, name), "opencode's UI in the session",
                   timeout=300, interval=1)
        run.sendcontrol("]")
        run.expect("keeps running")
        run.expect(pexpect.EOF)
    finally:
        run.close()
    again = pexpect.spawn(str(BIN / "banger"), ["vm", "session", "attach", "runvm", name],
                          env=env, encoding="utf-8", timeout=120, dimensions=(30, 100))
    try:
        again.expect(r"attached; Ctrl-\] detaches")
        again.sendcontrol("]")
        again.expect("keeps running")
        again.expect(pexpect.EOF)
    finally:
        again.close()
    assert b.show("runvm")["sessions"][0]["state"] == "running"
    b.run("vm", "delete", "-f", "runvm", check=True, timeout=120)


def screen(b: Banger, session: str) -> str:
    """The session's output with the terminal's escape sequences taken out."""
    raw = b.run("vm", "session", "logs", "runvm", session, check=True, timeout=60).stdout
    return re.sub(r"\x1b\[[0-9;?<>=]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]", "", raw)


@pytest.mark.skipif(shutil.which("npm") is None and "NPM_CONFIG_REGISTRY" not in os.environ,
                    reason="no npm registry configured")
def test_a_second_pull_uses_the_cache_and_a_bad_version_is_one_line(banger: Banger) -> None:
    first = banger.run("agent", "pull", "opencode", check=True, timeout=900)
    assert "fetched from" in first.stdout
    again = banger.run("agent", "pull", "opencode", check=True, timeout=120)
    assert "already cached, not fetched again" in again.stdout
    version = again.stdout.split()[1].rstrip(":")
    exact = banger.run("agent", "pull", f"opencode@{version}", check=True, timeout=60)
    assert "already cached" in exact.stdout
    missing = banger.run("agent", "pull", "opencode@0.0.0-no-such-version", timeout=120)
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 1 and missing.stdout == "" and len(errors) == 1
    assert "has no version 0.0.0-no-such-version" in errors[0]
