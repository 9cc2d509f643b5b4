#!/usr/bin/env python3
"""VM start benchmark: `vm run --rm -- true`, cold and from a template, against the raw boot floor.

Floor: the same kernel, initramfs and image booted by a bare QEMU command whose init prints a
marker and powers off (the image gets one extra file, the marker init, in a scratch copy).
Also measured: create -> agent ready, stop time, host RSS of an idle VM. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.vmtest import SLIM, ensure_artifacts, make_home, vm_lock  # noqa: E402

from banger.vmm.cmdline import host_tsc_khz  # noqa: E402

BIN = Path(sys.executable).parent
MARKER = "BANGER-FLOOR-MARKER"
# Same as banger's VMs: without it TCG's PIT calibration hangs ~1 boot in 5 (see HOST-NOTES).
TSC = f"tsc_early_khz={host_tsc_khz()}" if host_tsc_khz() else ""


def banger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "banger"), *args], env=env, capture_output=True, text=True,
                          check=True, timeout=300)


def floor_boot(kernel: Path, initrd: Path, rootfs: Path, scratch: Path) -> float:
    """One bare boot to the marker and power-off; returns seconds from launch to exit."""
    log = scratch / "floor.log"
    log.unlink(missing_ok=True)
    argv = ["qemu-system-x86_64", "-M", "microvm,pit=on,pic=on,rtc=on", "-accel", "tcg,thread=multi",
            "-cpu", "max", "-smp", "1", "-m", "1024M", "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{log}",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 root=/dev/vda rootfstype=ext4 rw init=/floor-init panic=-1 "
                       f"quiet loglevel=4 {TSC}",
            "-drive", f"id=root,file={rootfs},format=raw,if=none",
            "-device", "virtio-blk-device,drive=root"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, timeout=120)
    took = time.perf_counter() - start
    if MARKER not in log.read_text(errors="replace"):
        raise RuntimeError(f"floor boot did not print the marker: {log.read_text()[-500:]}")
    return took


def make_floor_rootfs(image: Path, scratch: Path) -> Path:
    rootfs = scratch / "floor.ext4"
    subprocess.run(["cp", "--sparse=always", str(image), str(rootfs)], check=True)
    script = scratch / "floor-init"
    script.write_text(f"#!/bin/sh\necho {MARKER}\necho o > /proc/sysrq-trigger\nsleep 10\n")
    cmds = f"write {script} floor-init\nsif floor-init mode 0100755\n"
    subprocess.run(["debugfs", "-w", "-f", "-", str(rootfs)], input=cmds, text=True, check=True,
                   capture_output=True)
    return rootfs


def daemon_start_seconds(log: Path, name: str) -> float | None:
    """The daemon's own account of a start: 'VM NAME running (pid N) in S s'."""
    for line in reversed(log.read_text().splitlines()):
        m = re.search(rf"VM {name} running \(pid \d+\) in ([0-9.]+)s", line)
        if m:
            return float(m.group(1))
    return None


def restore_seconds(log: Path) -> float | None:
    """The last restore's QEMU launch + state load + agent answer (debug log), i.e. agent-ready."""
    for line in reversed(log.read_text().splitlines()):
        m = re.search(r"restore: launch ([0-9.]+)s, load\+resume ([0-9.]+)s, agent ([0-9.]+)s", line)
        if m:
            return round(sum(float(x) for x in m.groups()), 3)
    return None


def memory_kib(pid: int, path: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cache = ensure_artifacts(SLIM)
    kdir = cache / "state" / "kernels" / "debian-bookworm-cloud"
    image = cache / "state" / "images" / SLIM / "rootfs.ext4"
    home = make_home(cache, prefix="bb-")
    env = {**os.environ, "BANGER_HOME": str(home), "BANGER_LOG_LEVEL": "debug"}
    try:
        with vm_lock():
            rootfs = make_floor_rootfs(image, home)
            floor_boot(kdir / "vmlinuz", kdir / "initramfs.img", rootfs, home)  # warm the page cache
            banger(env, "vm", "run", "--rm", "--", "true")  # warm: daemon up, template built
            floor, cold, fast = [], [], []
            for _ in range(args.runs):  # interleaved so all see the same machine load
                floor.append(floor_boot(kdir / "vmlinuz", kdir / "initramfs.img", rootfs, home))
                t0 = time.perf_counter()
                banger(env, "vm", "run", "--rm", "--cold", "--", "true")
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                banger(env, "vm", "run", "--rm", "--", "true")
                fast.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            banger(env, "vm", "create", "--name", "bench")
            create = time.perf_counter() - t0
            daemon_side = daemon_start_seconds(home / "state" / "bangerd.log", "bench")
            agent_ready = restore_seconds(home / "state" / "bangerd.log")
            time.sleep(3)
            handles = json.loads((Path(json.loads(banger(env, "vm", "show", "bench").stdout)["dir"])
                                  / "handles.json").read_text())
            rss = memory_kib(handles["pid"], "status", "VmRSS")
            pss = memory_kib(handles["pid"], "smaps_rollup", "Pss")  # shared template RAM split
            t0 = time.perf_counter()
            banger(env, "vm", "stop", "bench")
            stop = time.perf_counter() - t0
            banger(env, "vm", "delete", "bench")
    finally:
        subprocess.run([str(BIN / "banger"), "daemon", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    result = {
        "benchmark": "vm_run",
        "runs": args.runs,
        "floor_boot_s": round(med(floor), 3),
        "cold": {"vm_run_rm_true_s": round(med(cold), 3),
                 "ratio_to_floor": round(med(cold) / med(floor), 2), "target_ratio": 2.0},
        "template": {"vm_run_rm_true_s": round(med(fast), 3),
                     "ratio_to_floor": round(med(fast) / med(floor), 2), "target_ratio": 0.35,
                     "create_wall_s": round(create, 3),
                     "create_daemon_side_s": daemon_side, "target_daemon_side_s": 0.3,
                     "restore_to_agent_ready_s": agent_ready},
        "stop_s": round(stop, 3),
        "idle_vm_qemu_rss_mib": round(rss / 1024, 1),
        "idle_vm_qemu_pss_mib": round(pss / 1024, 1),
        "samples": {"floor": [round(x, 3) for x in floor], "cold": [round(x, 3) for x in cold],
                    "template": [round(x, 3) for x in fast]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
