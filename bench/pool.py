#!/usr/bin/env python3
"""Warm pool and lean VM benchmark, against the raw boot floor measured in the same run.

Measures: pooled `vm run --rm -- true` (pool size 1, refilled between runs) and the same from a
template without a pool; 10 concurrent `vm run --rm -- true` against the same 10 one after
another (no pool); the PSS of an idle template clone and of a paused pooled clone, split by
mapping (guest RAM file, TCG translation cache, heap, other anonymous, files). Prints JSON.
`--tb-mib N` starts the daemon with BANGER_TCG_TB_MIB=N (QEMU's `-accel tcg,tb-size=N`).
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
sys.path.insert(0, str(ROOT / "bench"))  # vm_run.py: the floor boot

from tests.vmtest import SLIM, ensure_artifacts, make_home, vm_lock  # noqa: E402
from vm_run import banger, floor_boot, make_floor_rootfs  # noqa: E402

BIN = Path(sys.executable).parent


def pss_breakdown(pid: int) -> dict[str, float]:
    """MiB of PSS per kind of mapping, from /proc/PID/smaps."""
    kinds: dict[str, float] = {}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            perms, path = head[1], (head[5] if len(head) > 5 else "")
            if path.endswith("memory.ram"):
                kind = "guest_ram_file"
            elif path == "[heap]":
                kind = "heap"
            elif path.startswith("/"):
                kind = "files"
            elif "x" in perms:
                kind = "tcg_code_cache"
            else:
                kind = "anon"
        elif head and head[0] == "Pss:":
            kinds[kind] = kinds.get(kind, 0.0) + int(head[1]) / 1024
    total = sum(kinds.values())
    return {**{k: round(v, 1) for k, v in sorted(kinds.items())}, "total": round(total, 1)}


def vm_pid(env: dict[str, str], name: str) -> int:
    vm_dir = Path(json.loads(banger(env, "vm", "show", name).stdout)["dir"])
    return int(json.loads((vm_dir / "handles.json").read_text())["pid"])


def pool_ready(env: dict[str, str], size: int, timeout: float = 120.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(banger(env, "vm", "pool", "list", "--json").stdout)
        if rows and rows[0]["ready"] >= size:
            return list(rows)
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool not ready: {rows}")
        time.sleep(0.05)


def timed_run(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    banger(env, "vm", "run", "--rm", "--", "true")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--tb-mib", type=int, default=0, help="TCG translation cache (0: banger's)")
    args = parser.parse_args()
    cache = ensure_artifacts(SLIM)
    kdir = cache / "state" / "kernels" / "debian-bookworm-cloud"
    image = cache / "state" / "images" / SLIM / "rootfs.ext4"
    home = make_home(cache, prefix="bp-")
    env = {**os.environ, "BANGER_HOME": str(home)}
    if args.tb_mib:
        env["BANGER_TCG_TB_MIB"] = str(args.tb_mib)
    try:
        with vm_lock():
            rootfs = make_floor_rootfs(image, home)
            floor_boot(kdir / "vmlinuz", kdir / "initramfs.img", rootfs, home)  # warm the page cache
            timed_run(env)  # warm: daemon up, template built
            floor, template, pooled = [], [], []
            for _ in range(args.runs):  # interleaved so all see the same machine load
                floor.append(floor_boot(kdir / "vmlinuz", kdir / "initramfs.img", rootfs, home))
                template.append(timed_run(env))
            banger(env, "vm", "pool", "set", "--size", "1")
            for _ in range(args.runs):
                pool_ready(env, 1)
                pooled.append(timed_run(env))
            rows = pool_ready(env, 1)
            time.sleep(1)
            pool_dir = home / "state" / "vms"
            paused = [d for d in pool_dir.iterdir() if (d / "pool.json").exists()]
            paused_pid = int(json.loads((paused[0] / "handles.json").read_text())["pid"])
            paused_pss = pss_breakdown(paused_pid)
            banger(env, "vm", "pool", "set", "--size", "0")
            banger(env, "vm", "create", "--name", "idle")
            time.sleep(5)  # idle: what a clone settles at once its first work is done
            idle_pss = pss_breakdown(vm_pid(env, "idle"))
            banger(env, "vm", "delete", "-f", "idle")
            t0 = time.perf_counter()
            for _ in range(args.concurrent):
                timed_run(env)
            sequential = time.perf_counter() - t0
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrent) as ex:
                list(ex.map(lambda _: timed_run(env), range(args.concurrent)))
            parallel = time.perf_counter() - t0
    finally:
        subprocess.run([str(BIN / "banger"), "daemon", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    result = {
        "benchmark": "pool",
        "runs": args.runs,
        "tcg_tb_mib": args.tb_mib or "default",
        "floor_boot_s": round(med(floor), 3),
        "template_vm_run_rm_true": {"s": round(med(template), 3),
                                    "ratio_to_floor": round(med(template) / med(floor), 3),
                                    "target_ratio": 0.20},
        "pooled_vm_run_rm_true": {"s": round(med(pooled), 3),
                                  "ratio_to_floor": round(med(pooled) / med(floor), 3),
                                  "target_ratio": 0.12},
        "concurrent": {"n": args.concurrent, "sequential_s": round(sequential, 2),
                       "concurrent_s": round(parallel, 2),
                       "ratio": round(parallel / sequential, 2), "target_ratio": 0.6},
        "idle_clone_pss_mib": idle_pss, "target_idle_pss_mib": 40,
        "paused_pool_clone_pss_mib": paused_pss,
        "pool_list_pss_mib": rows[0]["pss_mib"],
        "samples": {"floor": [round(x, 3) for x in floor],
                    "template": [round(x, 3) for x in template],
                    "pooled": [round(x, 3) for x in pooled]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
