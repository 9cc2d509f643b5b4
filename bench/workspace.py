#!/usr/bin/env python3
"""Workspace shipping benchmark: `vm workspace prepare` against a plain tar stream, in one run.

A repo of 5,000 files / ~50 MB is committed on the host. Shipping it (host git work, the pack
through the agent, checkout in the guest) is timed against the same tree as a plain tar stream
extracted by the agent's put over the same channel (the tar is built before timing starts, so
the baseline is the bare stream). Two contents: source-like text and incompressible bytes.
Prints one JSON object; ratio = workspace seconds / plain tar seconds (target <= 1.0), and
disk_ratio = workspace MB/s / the guest's cold read of its own disk (target >= 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from streams import disk_read  # noqa: E402
from tests.conftest import Banger  # noqa: E402
from tests.vmtest import SLIM, vm_home, vm_lock  # noqa: E402

from banger.rpc.methods.testing import SWITCH  # noqa: E402

VM = "wsbench"
WORDS = ["def", "class", "return", "self", "value", "index", "items", "range", "print",
         "import", "from", "async", "await", "result", "error", "config", "path", "name", "data",
         "list", "dict", "none", "true", "false", "for", "while", "if", "else", "try", "except"]


def make_repo(root: Path, files: int, total_bytes: int, kind: str) -> Path:
    rng = random.Random(7)
    size = total_bytes // files
    for i in range(files):
        path = root / f"pkg{i // 100:02d}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "random":
            path.write_bytes(os.urandom(size))
        else:
            line_words = (rng.choice(WORDS) for _ in range(size // 5))
            path.write_text(" ".join(line_words)[:size])
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    return root


def plain_tar(repo: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for path in sorted(repo.rglob("*")):
            if ".git" not in path.relative_to(repo).parts:
                tar.add(path, arcname=str(path.relative_to(repo)), recursive=False)
    return out


def timed(b: Banger, *args: str) -> float:
    start = time.perf_counter()
    b.run(*args, timeout=900, check=True)
    return time.perf_counter() - start


def put_tar(b: Banger, tar: Path, dest: str) -> float:
    start = time.perf_counter()
    code = ("from banger.cli import session; from banger.rpc.methods import testing as t; "
            f"session.call(t.WORKSPACE_PUT_TAR, t.PutTarParams({VM!r}, {str(tar)!r}, {dest!r}))")
    subprocess.run([sys.executable, "-c", code], env=b.env, check=True, timeout=900)
    return time.perf_counter() - start


def measure(b: Banger, kind: str, files: int, total: int, rounds: int,
            scratch: Path) -> dict[str, object]:
    repo = make_repo(scratch / kind, files, total, kind)
    tar = plain_tar(repo, scratch / f"{kind}.tar")
    tree_mb = sum(p.stat().st_size for p in repo.rglob("*") if ".git" not in p.parts) / 1e6
    ship, plain = [], []
    for _ in range(rounds):
        b.run("vm", "exec", VM, "--", "rm", "-rf", "/root/repo", "/root/plain", check=True)
        plain.append(put_tar(b, tar, "/root/plain"))
        ship.append(timed(b, "vm", "workspace", "prepare", VM, str(repo), "--no-bootstrap",
                          "--force"))
    count = b.run("vm", "exec", VM, "--", "sh", "-c",
                  "cd /root/repo && git ls-files | wc -l; cd /root/plain && find . -type f | wc -l",
                  check=True).stdout.split()
    assert count == [str(files), str(files)], count
    ship_s, plain_s = statistics.median(ship), statistics.median(plain)
    return {"content": kind, "files": files, "tree_mb": round(tree_mb, 1),
            "tar_mb": round(tar.stat().st_size / 1e6, 1),
            "workspace_s": round(ship_s, 2), "plain_tar_s": round(plain_s, 2),
            "workspace_mb_s": round(tree_mb / ship_s, 1),
            "plain_tar_mb_s": round(tree_mb / plain_s, 1),
            "ratio": round(ship_s / plain_s, 2), "runs_workspace": [round(x, 2) for x in ship],
            "runs_plain": [round(x, 2) for x in plain]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--content", choices=["text", "random", "both"], default="both")
    args = parser.parse_args()
    kinds = ["text", "random"] if args.content == "both" else [args.content]
    os.environ[SWITCH] = "1"  # the daemon vm_home starts serves workspace.put_tar
    with vm_lock(), vm_home(SLIM) as b, tempfile.TemporaryDirectory(prefix="wsb-") as tmp:
        b.run("vm", "create", "--name", VM, "--disk", "4G", timeout=300, check=True)
        disk = statistics.median(disk_read(b, 200, VM) for _ in range(2))
        results = [measure(b, kind, args.files, args.mb * 1_000_000, args.rounds, Path(tmp))
                   for kind in kinds]
    for r in results:  # the bar: shipping at >= 0.25x the guest's own disk read
        r["disk_ratio"] = round(float(r["workspace_mb_s"]) / disk, 3)  # type: ignore[arg-type]
    print(json.dumps({"bench": "workspace", "baseline_disk_read_mb_s": round(disk, 1),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
