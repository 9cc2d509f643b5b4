"""Checkpoints and live forks on real VMs: restore never loses work, forks keep running
processes and get their own identity, workspaces survive both, bad input is one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.vms import checkpoints, fork
from tests.conftest import Banger
from tests.polling import wait_until
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm]

IDENTITY = "hostname; cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done"


@pytest.fixture(scope="module")
def sb() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b


def guest(b: Banger, vm: str, script: str) -> subprocess.CompletedProcess[str]:
    return b.run("vm", "exec", vm, "--", "sh", "-c", script, timeout=120)


def out(b: Banger, vm: str, script: str) -> str:
    res = guest(b, vm, script)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def one_line_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], res.stderr


def make_repo(root: Path) -> Path:
    repo = root / "proj"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / "hello.txt").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "one"], check=True)
    return repo


def test_restore_goes_back_and_the_automatic_checkpoint_brings_work_back(
        sb: Banger, tmp_path: Path) -> None:
    sb.run("vm", "create", "--name", "cp", check=True, timeout=600)
    sb.run("vm", "workspace", "prepare", "cp", str(make_repo(tmp_path)), check=True, timeout=120)
    out(sb, "cp", "echo kept > /root/before")
    running = sb.popen("vm", "exec", "cp", "--", "sh", "-c", "echo started; sleep 3; echo done")
    assert running.stdout is not None and running.stdout.readline() == "started\n"
    made = sb.run("vm", "snapshot", "create", "cp", "--name", "one", check=True, timeout=120)
    assert "checkpoint one of cp (memory and disk" in made.stdout
    memory = checkpoints.root(sb.home / "state" / "vms" / sb.show("cp")["id"]) / "one"
    assert (memory / checkpoints.MEMORY).stat().st_mode & 0o777 == 0o600  # banger's own file
    assert sb.show("cp")["state"] == "running"
    rest, _ = running.communicate(timeout=60)  # an exec under way goes on through the pause
    assert (running.returncode, rest) == (0, "done\n")
    out(sb, "cp", "echo new > /root/after")

    res = sb.run("vm", "snapshot", "restore", "cp", "one", check=True, timeout=180)
    auto = next(w for w in res.stdout.split() if w.startswith("auto-")).rstrip(":")
    assert out(sb, "cp", "cat /root/before; test -e /root/after || echo gone") == "kept\ngone"
    assert out(sb, "cp", "git status --short; cat hello.txt") == "hello"  # workspace usable

    sb.run("vm", "snapshot", "restore", "cp", auto, check=True, timeout=180)
    assert out(sb, "cp", "cat /root/before /root/after") == "kept\nnew"
    rows = json.loads(sb.run("vm", "snapshot", "list", "cp", "--json", check=True).stdout)
    names = [r["name"] for r in rows]
    assert "one" in names and auto in names and len(names) == 3  # + the second restore's auto
    assert all(r["memory"] and r["size_bytes"] > 0 for r in rows)

    one_line_error(sb.run("vm", "snapshot", "create", "cp", "--name", "Bad/Name"),
                   "invalid checkpoint name")
    one_line_error(sb.run("vm", "snapshot", "restore", "cp", "nope"), "no checkpoint 'nope'")
    one_line_error(sb.run("vm", "snapshot", "delete", "cp", "nope"), "no checkpoint 'nope'")
    one_line_error(sb.run("vm", "snapshot", "list", "ghost"), "ghost")
    one_line_error(sb.run("vm", "snapshot", "create", "cp", "--name", "one"), "already has")
    sb.run("vm", "snapshot", "delete", "cp", "one", check=True)
    sb.run("vm", "delete", "-f", "cp", check=True, timeout=60)
    disks = sb.home / "state" / "templates" / ".disks"
    assert not [d for d in disks.iterdir() if d.name.startswith("snap-")]  # all collected


def test_forks_keep_running_processes_and_get_their_own_identity(
        sb: Banger, tmp_path: Path) -> None:
    sb.run("vm", "create", "--name", "src", check=True, timeout=600)
    sb.run("vm", "workspace", "prepare", "src", str(make_repo(tmp_path)), check=True, timeout=120)
    sb.run("vm", "session", "start", "src", "--name", "count", "--", "sh", "-c", COUNTER,
           check=True)
    wait_until(lambda: guest(sb, "src", "cat /root/counter").stdout.strip() not in ("", "1"),
               "the counter runs in src", timeout=30)
    res = sb.run("vm", "fork", "src", "--count", "2", check=True, timeout=300)
    assert "src-fork-1 running" in res.stdout and "src-fork-2 running" in res.stdout
    assert not list(Path(fork.SHM).glob(f"{fork._tag(sb.home / 'state')}*"))  # RAM dir gone
    names = ["src", "src-fork-1", "src-fork-2"]
    for name in names:
        assert sb.show(name)["state"] == "running"
        first = int(out(sb, name, "cat /root/counter"))

        def counting(n: str = name, f: int = first) -> bool:
            return int(out(sb, n, "cat /root/counter")) > f

        wait_until(counting, f"the counter runs on in {name}", timeout=30)
    ids = [out(sb, name, IDENTITY).splitlines() for name in names]
    assert [i[0] for i in ids] == names
    assert len({i[1] for i in ids}) == 3 and len({i[2] for i in ids}) == 3
    assert out(sb, "src-fork-1", "cat hello.txt; git log --oneline | wc -l") == "hello\n1"
    export = sb.run("vm", "workspace", "export", "src-fork-2", "-o", str(tmp_path / "w.tar"),
                    timeout=120)
    assert export.returncode == 0, export.stderr
    events = [e["message"] for e in sb.show("src-fork-1")["events"]]
    assert "started from a fork of src" in events

    one_line_error(sb.run("vm", "fork", "src", "--name", "src-fork-1"), "already exists")
    one_line_error(sb.run("vm", "fork", "src", "--name", "Bad_Name"), "invalid VM name")
    for name in names:
        sb.run("vm", "delete", "-f", name, check=True, timeout=60)
    disks = sb.home / "state" / "templates" / ".disks"
    assert not [d for d in disks.iterdir() if d.name.startswith("fork-")]
