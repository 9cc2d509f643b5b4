"""A real local registry (Debian's docker-registry) and OCI test images built with umoci + skopeo."""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def registry(workdir: Path) -> Iterator[str]:
    """`docker-registry serve` on 127.0.0.1:<free port>; yields HOST:PORT, stops it after."""
    port = free_port()
    conf = workdir / "registry.yml"
    conf.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {workdir / 'registry-data'}\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
    log = (workdir / "registry.log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"docker-registry did not start: "
                                       f"{(workdir / 'registry.log').read_text()}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def rootfs_tree(ext4: Path, dest: Path) -> Path:
    """Extract an ext4 image into `dest` (owners kept when root) without mounting it."""
    dest.mkdir(parents=True)
    subprocess.run(["debugfs", "-R", f"rdump / {dest}", str(ext4)], check=True,
                   capture_output=True)
    subprocess.run(["rm", "-rf", str(dest / "lost+found")], check=True)
    return dest


def tar_tree(tree: Path, out: Path) -> Path:
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "-cf", str(out), "."], check=True)
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
           uid: int = 0, gid: int = 0, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.linkname, info.mtime = linkname, 1_700_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def layer_tar(out: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out


def push_image(workdir: Path, registry_addr: str, repo: str, layers: list[Path]) -> str:
    """Build an OCI image from layer tars with umoci and push it with skopeo; returns the ref."""
    layout = workdir / ("layout-" + repo.replace("/", "-").replace(":", "-"))
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:t"], check=True)
    for layer in layers:
        subprocess.run(["umoci", "raw", "add-layer", "--image", f"{layout}:t", str(layer)],
                       check=True)
    ref = f"{registry_addr}/{repo}"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:t",
                    f"docker://{ref}"], check=True)
    return ref
