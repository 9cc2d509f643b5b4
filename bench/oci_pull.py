#!/usr/bin/env python3
"""OCI pull benchmark: `banger image pull REF` (cold blob cache) against the same job done by hand.

The image (~200 MB uncompressed: the slim rootfs plus a ~100 MB random layer) is built with umoci
and pushed to a local docker-registry on 127.0.0.1. Baseline per run: `skopeo copy` into a fresh
OCI layout + `umoci raw unpack` + `mkfs.ext4 -d` at the size banger picked. Prints one JSON object.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ocitest import push_image, registry, rootfs_tree, tar_tree  # noqa: E402
from tests.vmtest import SLIM, ensure_artifacts  # noqa: E402

BIN = Path(sys.executable).parent
RANDOM_MB = 100


def sh(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, env=env, timeout=1800)


def random_layer(work: Path) -> Path:
    tree = work / "random"
    (tree / "opt/blob").mkdir(parents=True)
    for i in range(RANDOM_MB // 10):
        (tree / f"opt/blob/chunk{i}").write_bytes(os.urandom(10 << 20))
    out = tar_tree(tree, work / "random.tar")
    shutil.rmtree(tree)
    return out


def banger_pull(env: dict[str, str], home: Path, ref: str) -> float:
    shutil.rmtree(home / "cache" / "oci", ignore_errors=True)
    subprocess.run([str(BIN / "banger"), "image", "delete", "bench"], env=env, capture_output=True)
    start = time.monotonic()
    sh(BIN / "banger", "image", "pull", ref, "--name", "bench", env=env)
    return time.monotonic() - start


def baseline(work: Path, ref: str, size: int) -> dict[str, float]:
    layout, tree, img = work / "base-layout", work / "base-tree", work / "base.ext4"
    for p in (layout, tree):
        shutil.rmtree(p, ignore_errors=True)
    img.unlink(missing_ok=True)
    t0 = time.monotonic()
    sh("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:t")
    t1 = time.monotonic()
    sh("umoci", "raw", "unpack", "--image", f"{layout}:t", tree)
    t2 = time.monotonic()
    sh("mkfs.ext4", "-q", "-F", "-d", tree, img, f"{size // 1024}k")
    t3 = time.monotonic()
    return {"copy": t1 - t0, "unpack": t2 - t1, "mkfs": t3 - t2, "total": t3 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cache = ensure_artifacts(SLIM)
    work = Path(tempfile.mkdtemp(prefix="oci-bench-", dir="/var/tmp"))
    try:
        with registry(work) as addr:
            base = tar_tree(rootfs_tree(cache / "state/images" / SLIM / "rootfs.ext4",
                                        work / "slim"), work / "base.tar")
            shutil.rmtree(work / "slim")
            ref = push_image(work, addr, "bench/img:v1", [base, random_layer(work)])
            home = work / "home"
            (home / "config").mkdir(parents=True)
            (home / "config/config.toml").write_text(f'oci_insecure_registries = ["{addr}"]\n')
            env = {**os.environ, "BANGER_HOME": str(home)}
            sh(BIN / "banger", "image", "list", env=env)  # start the daemon outside the timing
            ours, theirs = [], []
            for _ in range(args.runs):
                ours.append(banger_pull(env, home, ref))
                size = json.loads(subprocess.run(
                    [str(BIN / "banger"), "image", "show", "bench"], env=env, check=True,
                    capture_output=True, text=True).stdout)["size"]
                theirs.append(baseline(work, ref, size))
            sh(BIN / "banger", "daemon", "stop", env=env)
            med = statistics.median
            base_total = med(t["total"] for t in theirs)
            print(json.dumps({
                "image_mb": round((base.stat().st_size >> 20) + RANDOM_MB),
                "runs": args.runs,
                "banger_pull_s": round(med(ours), 2),
                "banger_runs_s": [round(t, 2) for t in ours],
                "baseline_s": round(base_total, 2),
                "baseline_stages_s": {k: round(med(t[k] for t in theirs), 2)
                                      for k in ("copy", "unpack", "mkfs")},
                "ratio": round(med(ours) / base_total, 2),
                "target_ratio": 1.2,
            }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
