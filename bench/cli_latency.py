#!/usr/bin/env python3
"""CLI latency: median wall of `banger vm list --json` (daemon up, no VMs) vs `python3 -c pass`.

Prints one JSON object. Both are measured in the same run so the ratio survives a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wall(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bh-bench-", dir="/tmp")
    env = {**os.environ, "BANGER_HOME": home}
    banger = [str(BIN / "banger"), "vm", "list", "--json"]
    try:
        subprocess.run(banger, env=env, check=True, stdout=subprocess.DEVNULL)  # starts the daemon
        baseline = wall([sys.executable, "-c", "pass"], env, args.runs)
        cli = wall(banger, env, args.runs)
    finally:
        subprocess.run([str(BIN / "banger"), "daemon", "stop"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "benchmark": "cli_latency",
        "runs": args.runs,
        "baseline_python_pass_ms": round(statistics.median(baseline), 1),
        "vm_list_json_ms": round(statistics.median(cli), 1),
        "vm_list_json_p90_ms": round(sorted(cli)[int(len(cli) * 0.9) - 1], 1),
        "ratio": round(statistics.median(cli) / statistics.median(baseline), 2),
        "target_ms": 150,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
