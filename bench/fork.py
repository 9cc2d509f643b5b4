#!/usr/bin/env python3
"""Live fork benchmark, against a template start measured in the same run.

Measures: `vm run --rm -- true` from a template (the baseline); `vm fork SRC --count K` of a
running VM (a session's counter loop running in it) until all K forks run and each answers a
`vm exec -- true` (asked of all at once), as seconds per fork; the PSS of each fork and of the
source (split by mapping as bench/pool.py does); `vm snapshot create` and `vm snapshot restore`
of the running source. Prints JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pool import pss_breakdown, timed_run, vm_pid  # noqa: E402
from tests.vmtest import SLIM, ensure_artifacts, make_home, vm_lock  # noqa: E402
from vm_run import banger  # noqa: E402

BIN = Path(sys.executable).parent
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done"


def timed(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    banger(env, *args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()
    cache = ensure_artifacts(SLIM)
    home = make_home(cache, prefix="bk-")
    env = {**os.environ, "BANGER_HOME": str(home)}
    try:
        with vm_lock():
            timed_run(env)  # warm: daemon up, template built
            template = [timed_run(env) for _ in range(args.runs)]
            banger(env, "vm", "create", "--name", "src")
            banger(env, "vm", "session", "start", "src", "--name", "count", "--", "sh", "-c",
                   COUNTER)
            t0 = time.perf_counter()
            banger(env, "vm", "fork", "src", "--count", str(args.count))
            forked = time.perf_counter() - t0
            names = [f"src-fork-{i}" for i in range(1, args.count + 1)]
            with concurrent.futures.ThreadPoolExecutor(args.count) as ex:  # all answer
                list(ex.map(lambda n: banger(env, "vm", "exec", n, "--", "true"), names))
            answering = time.perf_counter() - t0
            counters = {n: banger(env, "vm", "exec", n, "--", "cat", "/root/counter").stdout.strip()
                        for n in ["src", *names]}
            time.sleep(3)  # idle: what the forks settle at
            pss = {n: pss_breakdown(vm_pid(env, n)) for n in ["src", *names]}
            snap = timed(env, "vm", "snapshot", "create", "src", "--name", "b")
            restore = timed(env, "vm", "snapshot", "restore", "src", "b")
            rows = json.loads(banger(env, "vm", "snapshot", "list", "src", "--json").stdout)
    finally:
        subprocess.run([str(BIN / "banger"), "vm", "prune", "-f"], env=env, capture_output=True)
        for name in ["src", *[f"src-fork-{i}" for i in range(1, args.count + 1)]]:
            subprocess.run([str(BIN / "banger"), "vm", "delete", "-f", name], env=env,
                           capture_output=True)
        subprocess.run([str(BIN / "banger"), "daemon", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    base = statistics.median(template)
    per_fork = answering / args.count
    fork_pss = [pss[n]["total"] for n in names]
    result = {
        "benchmark": "fork",
        "count": args.count,
        "template_vm_run_rm_true_s": round(base, 3),
        "fork": {"command_s": round(forked, 3), "all_answering_s": round(answering, 3),
                 "per_fork_s": round(per_fork, 3),
                 "ratio_to_template_start": round(per_fork / base, 2), "target_ratio": 2.0},
        "counters_after_fork": counters,
        "pss_mib": {"source": pss["src"], "forks": {n: pss[n] for n in names},
                    "per_fork_total_median": round(statistics.median(fork_pss), 1)},
        "snapshot_create_s": round(snap, 3),
        "snapshot_restore_s": round(restore, 3),
        "snapshots": [{k: r[k] for k in ("name", "size_bytes", "auto")} for r in rows],
        "samples": {"template": [round(x, 3) for x in template]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
