"""Everyday banger as a normal user: build, kernel, vm run, workspace, fast start, OCI pull.

Run as root (CI), these run the real CLI as an unprivileged test user (tests/unpriv.py) with
its own daemon. The user's kernel and slim image are pulled and built by that user once per
source key and shared by the tests here; the build itself is compared with root's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.egress_env import EgressLab, guest_http, guest_resolve
from tests.ocitest import layer_tar, member, push_image, registry
from tests.unpriv import (
    BASE,
    UserBanger,
    as_root,
    ensure_user,
    tun_open_to_users,
    user_banger,
    user_dir,
)
from tests.vmtest import SLIM, artifacts_key, ensure_artifacts, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
IMAGE = f"/state/images/{SLIM}/rootfs.ext4"


def _user_cache() -> Path:
    """A home holding the kernel and slim image the test user pulled and built itself."""
    key = artifacts_key()
    home = BASE / f"user-home-{key}"
    done = home / "built"
    if done.exists():
        return home
    for old in BASE.glob("user-home-*"):
        shutil.rmtree(old, ignore_errors=True)
    entry = ensure_user()
    BASE.mkdir(mode=0o755, exist_ok=True)
    home.mkdir(mode=0o700)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    b = user_banger(home)
    try:
        t0 = time.monotonic()
        b.run("kernel", "pull", "debian-bookworm-cloud", timeout=900, check=True)
        t1 = time.monotonic()
        res = b.run("image", "pull", SLIM, timeout=1800, check=True)
        t2 = time.monotonic()
        print(f"\nas {entry.pw_name}: kernel pull {t1 - t0:.1f}s, {SLIM} build {t2 - t1:.1f}s")
        (home / "build.log").write_text(res.stderr)
        (home / "daemon-uid").write_text(_daemon_uid(b))
    finally:
        b.run("daemon", "stop")
    done.touch()
    return home


def _daemon_uid(b: UserBanger) -> str:
    pid = (b.home / "run" / "bangerd.lock").read_text().strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))


@pytest.fixture(scope="module")
def cache() -> Path:
    with vm_lock():
        return _user_cache()


@pytest.fixture(scope="module")
def ub(cache: Path) -> Iterator[UserBanger]:
    """A fresh home for the test user sharing its built kernel and image."""
    home = user_dir("bu-")
    b = user_banger(home)
    b.run_argv(["mkdir", "-p", f"{home}/state", f"{home}/config"], check=True)
    for sub in ("kernels", "images"):
        b.run_argv(["ln", "-s", f"{cache}/state/{sub}", f"{home}/state/{sub}"], check=True)
    config = (f'default_image = "{SLIM}"\n[vm_defaults]\nvcpu = 1\nmemory = "1G"\n'
              'disk = "4G"\n')
    b.run_argv(["sh", "-c", f"cat > {home}/config/config.toml"], input=config, check=True)
    try:
        with vm_lock():
            yield b
    finally:
        listed = b.run("vm", "list", "--json").stdout or "[]"
        for vm in json.loads(listed):  # running VMs outlive `daemon stop`
            b.run("vm", "delete", "-f", vm["name"], timeout=60)
        b.run("daemon", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _listing(img: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry of an ext4 image: path -> (mode, uid, gid), one debugfs run per depth."""
    found: dict[str, tuple[str, int, int]] = {}
    level = ["/"]
    while level:
        script = "".join(f'ls -p "{d}"\n' for d in level)
        out = subprocess.run(["debugfs", "-f", "-", str(img)], input=script, text=True,
                             capture_output=True, check=True).stdout
        current, deeper = "", []
        for line in out.splitlines():
            if line.startswith('debugfs: ls -p "'):
                current = line[len('debugfs: ls -p "'):-1].rstrip("/")
                continue
            fields = line.split("/")
            if len(fields) < 7 or fields[5] in (".", ".."):
                continue
            path, mode = f"{current}/{fields[5]}", int(fields[2], 8)
            found[path] = (oct(mode), int(fields[3]), int(fields[4]))
            if mode >> 12 == 0o04:
                deeper.append(path)
        level = deeper
    return found


def test_slim_build_as_user_is_owned_like_roots(cache: Path) -> None:
    entry = ensure_user()
    assert (cache / "daemon-uid").read_text() == str(entry.pw_uid)  # no privilege anywhere
    for stage in ("bootstrap", "customise", "inject", "mkfs"):
        assert stage in (cache / "build.log").read_text()
    mine = _listing(Path(f"{cache}{IMAGE}"))
    roots = _listing(ensure_artifacts(SLIM) / IMAGE.lstrip("/"))
    assert mine == roots  # every path, mode and owner, as a root build makes them
    assert mine["/etc/shadow"] == ("0o100640", 0, 42)
    assert mine["/usr/bin/passwd"] == ("0o104755", 0, 0)
    assert mine["/dev/null"] == ("0o20666", 0, 0)
    assert mine["/usr/local/lib/banger/agent/server.py"][1:] == (0, 0)
    assert any("__pycache__" in p for p in mine)  # the agent was byte-compiled in a chroot


def test_vm_run_workspace_and_fast_start(ub: UserBanger) -> None:
    res = ub.run("vm", "run", "--rm", "--", "cat", "/etc/os-release", timeout=600)
    assert res.returncode == 0, res.stderr
    assert 'ID=debian' in res.stdout
    times = []
    for _ in range(2):  # the first builds the template (if missing), the second restores it
        t0 = time.monotonic()
        ub.run("vm", "run", "--rm", "--", "true", timeout=600, check=True)
        times.append(time.monotonic() - t0)
    print(f"\nas a normal user: vm run --rm -- true {times[0]:.2f}s, then {times[1]:.2f}s")
    templates = ub.run("vm", "template", "list", "--json", check=True).stdout
    assert json.loads(templates), "no template: fast start did not work as a normal user"
    repo = ub.home / "repo"
    script = (f"git init -q -b main {repo} && cd {repo} && echo one > a.txt && git add a.txt "
              "&& git -c user.name=u -c user.email=u@x commit -qm first")
    ub.run_argv(["sh", "-c", script], check=True)
    ub.run("vm", "create", "--name", "ws", timeout=600, check=True)
    ub.run("vm", "workspace", "prepare", "ws", str(repo), timeout=300, check=True)
    ub.run("vm", "exec", "ws", "--", "sh", "-c", "echo two >> a.txt", timeout=120, check=True)
    export = ub.home / "work.tar"
    ub.run("vm", "workspace", "export", "ws", "-o", str(export), timeout=120, check=True)
    ub.run("vm", "workspace", "apply", "ws", "--file", str(export), timeout=120, check=True)
    got = ub.run_argv(["cat", str(repo / "a.txt")], check=True).stdout
    assert got == "one\ntwo\n"


def test_oci_pull_as_user(ub: UserBanger, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("oci")
    layer = layer_tar(work / "layer.tar", [
        member("etc", tarfile.DIRTYPE, mode=0o755),
        member("etc/os-release", data=b"ID=debian\nVERSION_CODENAME=bookworm\n"),
        member("etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42),
        member("usr/bin/su", data=b"#!/bin/sh\n", mode=0o4755),
        member("home/dev", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000),
    ])
    with registry(work) as reg:
        ref = push_image(work, reg, "test/unpriv:v1", [layer])
        conf = ub.home / "config" / "config.toml"
        text = ub.run_argv(["cat", str(conf)], check=True).stdout
        ub.run_argv(["sh", "-c", f"cat > {conf}"], check=True,
                    input=f'oci_insecure_registries = ["{reg}"]\n' + text)
        ub.run("daemon", "stop")  # the config is read at daemon start
        res = ub.run("image", "pull", ref, "--name", "unpriv-oci", timeout=600)
    assert res.returncode == 0, res.stderr
    img = Path(f"{ub.home}/state/images/unpriv-oci/rootfs.ext4")
    listing = _listing(img)
    ub.run("image", "delete", "unpriv-oci")
    assert listing["/etc/shadow"] == ("0o100640", 0, 42)
    assert listing["/usr/bin/su"] == ("0o104755", 0, 0)
    assert listing["/home/dev"] == ("0o40750", 1000, 1000)


CANCEL = """
import asyncio, glob, os, sys
from banger.debian.mirror import resolve_mirror
from banger.images.catalog import lookup
from banger.images.recipe import build_recipe
from banger.paths import resolve_paths

paths = resolve_paths()
paths.ensure()
WORK = f"/tmp/banger-bootstrap-{os.getpid()}-*"


def foreign():  # a file of a subordinate id: what the user's daemon cannot delete by itself
    for top in glob.glob(WORK):
        for dirpath, dirs, files in os.walk(top):
            for name in dirs + files:
                try:
                    if os.lstat(os.path.join(dirpath, name)).st_uid != os.getuid():
                        return True
                except OSError:
                    pass
    return False


async def main():
    build = asyncio.create_task(build_recipe(lookup(sys.argv[1]), paths, resolve_mirror("")))
    while not foreign():
        if build.done():
            await build
            raise SystemExit("the build ended before the bootstrap made any file")
        await asyncio.sleep(0.2)
    build.cancel()
    try:
        await build
    except asyncio.CancelledError:
        pass
    print("left:", sorted(os.listdir(paths.images_dir)), glob.glob(WORK))

asyncio.run(main())
"""


def test_cancelled_unprivileged_build_leaves_nothing(ub: UserBanger) -> None:
    """Files of subordinate ids (mmdebstrap's tree) are removed from inside a user namespace."""
    home = user_dir("bc-")
    other = UserBanger(home, ub.bindir, {**ub.env, "BANGER_HOME": str(home)})
    try:
        res = other.run_argv([str(ub.bindir / "python"), "-c", CANCEL, SLIM], timeout=600)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "left: [] []"
    finally:
        if as_root():
            shutil.rmtree(home, ignore_errors=True)


def test_egress_rules_as_user(ub: UserBanger) -> None:
    """The user's daemon owns the VM's namespace: it loads the firewall, serves DNS and the host
    alias there without any privilege."""
    with EgressLab() as lab, tun_open_to_users():
        ub.run("daemon", "stop")
        config = (f'egress_upstream_dns = "127.0.0.1:{lab.dns_port}"\ndefault_image = "{SLIM}"\n'
                  '[vm_defaults]\nvcpu = 1\nmemory = "1G"\ndisk = "4G"\n')
        ub.run_argv(["sh", "-c", f"cat > {ub.home}/config/config.toml"], input=config, check=True)
        res = ub.run("vm", "create", "--name", "ueg", "--net", "user", "--allow", "pkg.test:8080",
                     "--allow", f"host.banger.internal:{lab.host_port}", timeout=600)
        assert res.returncode == 0, res.stderr
        try:
            assert guest_http(ub, "ueg", "http://pkg.test:8080/") == "server-a-8080"
            assert (guest_http(ub, "ueg", f"http://host.banger.internal:{lab.host_port}/")
                    == f"host-loopback-{lab.host_port}")
            seen = guest_http(ub, "ueg", lab.url(lab.ip_b))
            assert seen.startswith("fail ConnectionRefusedError"), seen
            assert guest_resolve(ub, "ueg", "other.test").startswith("fail")
            ub.run("vm", "set", "ueg", "--allow", "other.test:8080", check=True)
            assert guest_http(ub, "ueg", "http://other.test:8080/") == "server-b-8080"
            log = ub.run("vm", "logs", "--egress", "ueg", check=True).stdout
            assert "dns  other.test" in log and f"tcp  {lab.ip_b}:8080" in log, log
        finally:
            ub.run("vm", "delete", "-f", "ueg", timeout=120)
