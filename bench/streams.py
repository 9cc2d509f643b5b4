#!/usr/bin/env python3
"""Stream throughput benchmark: `vm exec` stdin and stdout (and `vm cp`) against the guest's disk.

Baseline, measured in the same run on the same VM: `dd` reading a 200 MB file from the guest's
own disk with the page cache dropped (what the guest's virtio-blk delivers). Then 200 MB:
- stdin:  host file -> `vm exec -i VM -- sh -c 'cat > /dev/null'`
- stdout: `vm exec VM -- head -c 200M /dev/zero` -> /dev/null on the host
- cp in / cp out: `vm cp` of a 200 MB file host -> guest and guest -> host (when `vm cp` exists)
Prints one JSON object; ratio = stream MB/s / baseline MB/s (stdin/stdout target >= 50 MB/s,
cp target >= 0.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, Banger  # noqa: E402
from tests.vmtest import SLIM, vm_home, vm_lock  # noqa: E402

VM = "streambench"
_DD = re.compile(r"^(\d+) bytes .* copied, ([0-9.]+) s", re.M)


def timed(argv: list[str], env: dict[str, str], *, stdin: Path | None = None) -> float:
    start = time.perf_counter()
    with open(stdin or os.devnull, "rb") as src, open(os.devnull, "wb") as sink:
        proc = subprocess.run(argv, stdin=src, stdout=sink, stderr=subprocess.PIPE, env=env,
                              timeout=1200)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def disk_read(b: Banger, mb: int, vm: str = VM) -> float:
    """The guest's own cold read rate of a file on its disk, MB/s (dd's own count and time)."""
    b.run("vm", "exec", vm, "--", "sh", "-c",
          f"head -c {mb}M /dev/urandom > /root/big && sync", timeout=600, check=True)
    out = b.run("vm", "exec", vm, "--", "sh", "-c",
                "echo 3 > /proc/sys/vm/drop_caches && dd if=/root/big of=/dev/null bs=1M",
                timeout=600, check=True).stderr
    match = _DD.search(out)
    if not match:
        raise SystemExit(f"no dd summary in {out!r}")
    return int(match[1]) / float(match[2]) / 1e6


def has_cp(b: Banger) -> bool:
    return b.run("vm", "cp", "--help").returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep-home", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mib = args.mb * 1024 * 1024
    banger = str(BIN / "banger")
    with vm_lock(), vm_home(SLIM) as b, tempfile.TemporaryDirectory(prefix="stb-") as tmp:
        b.run("vm", "create", "--name", VM, "--disk", "4G", timeout=300, check=True)
        src = Path(tmp) / "in.bin"
        with open(src, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1024 * 1024))
        runs: dict[str, list[float]] = {"disk": [], "stdin": [], "stdout": [], "cp_in": [],
                                        "cp_out": []}
        cp = has_cp(b)
        for _ in range(args.rounds):
            runs["disk"].append(disk_read(b, args.mb))
            runs["stdin"].append(mib / 1e6 / timed(
                [banger, "vm", "exec", "-i", VM, "--", "sh", "-c", "cat > /dev/null"], b.env,
                stdin=src))
            runs["stdout"].append(mib / 1e6 / timed(
                [banger, "vm", "exec", VM, "--", "head", "-c", f"{args.mb}M", "/dev/zero"],
                b.env))
            if cp:
                b.run("vm", "exec", VM, "--", "rm", "-f", "/root/in.bin", check=True)
                runs["cp_in"].append(mib / 1e6 / timed(
                    [banger, "vm", "cp", str(src), f"{VM}:/root/in.bin"], b.env))
                out = Path(tmp) / "out.bin"
                out.unlink(missing_ok=True)
                runs["cp_out"].append(mib / 1e6 / timed(
                    [banger, "vm", "cp", f"{VM}:/root/big", str(out)], b.env))
    base = statistics.median(runs["disk"])
    result: dict[str, object] = {"bench": "streams", "mb": args.mb,
                                 "baseline_disk_read_mb_s": round(base, 1)}
    for key in ("stdin", "stdout", "cp_in", "cp_out"):
        if runs[key]:
            rate = statistics.median(runs[key])
            result[f"{key}_mb_s"] = round(rate, 1)
            result[f"{key}_ratio"] = round(rate / base, 2)
    result["runs"] = {k: [round(x, 1) for x in v] for k, v in runs.items() if v}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
