"""OCI pulls from a real local registry: layers built with umoci, pushed with skopeo, booted."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.ocitest import layer_tar, member, push_image, registry, rootfs_tree, tar_tree
from tests.vmtest import SLIM, ensure_artifacts, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network]
REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

# The second layer: a deletion, an opaque directory, setuid/setgid/sticky, uid 1000, links.
CHANGES = [
    member("etc/.wh.issue.net"),
    member("etc/skel", DIR, mode=0o755),
    member("etc/skel/.wh..wh..opq"),
    member("etc/skel/only", data=b"opaque\n"),
    member("usr/local/bin/suid", data=b"#!/bin/sh\necho hi\n", mode=0o4755),
    member("usr/local/bin/hard", LNK, linkname="usr/local/bin/suid"),
    member("usr/local/bin/soft", SYM, linkname="suid"),
    member("home/dev", DIR, mode=0o750, uid=1000, gid=1000),
    member("home/dev/notes", data=b"mine\n", mode=0o640, uid=1000, gid=1000),
    member("srv/shared", DIR, mode=0o2775, gid=1000),
    member("srv/tmp", DIR, mode=0o1777),
    member("dev/fake-null", tarfile.CHRTYPE),
]
CHECKS = ("/usr/local/bin/suid /usr/local/bin/soft /home/dev /home/dev/notes /srv/shared "
          "/srv/tmp /etc/skel")
EXPECTED = {
    "/usr/local/bin/suid": "0 0 4755 regular file",
    "/usr/local/bin/soft": "0 0 777 symbolic link",
    "/home/dev": "1000 1000 750 directory",
    "/home/dev/notes": "1000 1000 640 regular file",
    "/srv/shared": "0 1000 2775 directory",
    "/srv/tmp": "0 0 1777 directory",
    "/etc/skel": "0 0 755 directory",
}


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="oci-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def reg(work: Path) -> Iterator[str]:
    with registry(work) as addr:
        yield addr


@pytest.fixture(scope="module")
def refs(work: Path, reg: str) -> dict[str, str]:
    cache = ensure_artifacts(SLIM)
    tree = rootfs_tree(cache / "state" / "images" / SLIM / "rootfs.ext4", work / "slim")
    base = tar_tree(tree, work / "base.tar")
    shutil.rmtree(tree)
    changes = layer_tar(work / "changes.tar", CHANGES)
    evil = layer_tar(work / "evil.tar", [member("../escaped", data=b"x")])
    return {"good": push_image(work, reg, "test/oci:v1", [base, changes]),
            "evil": push_image(work, reg, "test/evil:v1", [changes, evil])}


@pytest.fixture(scope="module")
def ob(reg: str, refs: dict[str, str]) -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        conf = b.home / "config" / "config.toml"
        conf.write_text(f'oci_insecure_registries = ["{reg}"]\n' + conf.read_text())
        yield b
        for name in ("ocitest", "oci-v1"):
            b.run("image", "delete", name)


def test_pull_boot_and_check_layers_inside_the_guest(ob: Banger, refs: dict[str, str]) -> None:
    res = ob.run("image", "pull", refs["good"], "--name", "ocitest", timeout=900)
    assert res.returncode == 0, res.stderr
    assert "image ocitest ready" in res.stdout
    for stage in ("resolve", "download", "flatten", "mkfs", "fixup"):
        assert stage in res.stderr
    assert "skipped device/fifo dev/fake-null" in res.stderr
    shown = json.loads(ob.run("image", "show", "ocitest", check=True).stdout)
    assert shown["distro"] == "debian" and shown["release"] == "bookworm"
    assert shown["kernel"] == "debian-bookworm-cloud" and shown["source"].startswith("oci:")
    script = (f"stat -c '%n %u %g %a %F' {CHECKS}; ls -A /etc/skel; "
              "test -e /etc/issue.net || echo issue.net-gone; test -e /dev/fake-null || echo no-dev; "
              "[ $(stat -c %i /usr/local/bin/suid) = $(stat -c %i /usr/local/bin/hard) ] && echo hardlinked; "
              "cat /home/dev/notes")
    res = ob.run("vm", "run", "--rm", "--image", "ocitest", "--", "sh", "-c", script, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    got = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines if ln.startswith("/")}
    assert got == EXPECTED
    assert "only" in lines and ".bashrc" not in lines  # opaque: the slim's skel files are gone
    for word in ("issue.net-gone", "no-dev", "hardlinked", "mine"):
        assert word in lines


def test_bad_layer_fails_cleanly_and_cache_prunes(ob: Banger, refs: dict[str, str]) -> None:
    res = ob.run("image", "pull", refs["evil"], timeout=300)
    assert res.returncode == 1
    assert "'../escaped'" in res.stderr and "contains '..'" in res.stderr
    assert res.stderr.count("\n") >= 1
    names = [i["name"] for i in json.loads(ob.run("image", "list", "--json", check=True).stdout)]
    assert "evil-v1" not in names
    images_dir = ob.home / "state" / "images"
    assert not [p for p in images_dir.iterdir() if p.name.startswith(".staging-evil")]
    assert not (Path("/") / "escaped").exists()
    dry = ob.run("image", "cache", "prune", "--dry-run", check=True)
    assert "would free" in dry.stdout and "still in use" in dry.stdout
    res = ob.run("image", "pull", refs["good"], "--name", "ocitest")
    assert res.returncode == 1 and "already exists" in res.stderr


def test_unknown_ref_and_bad_size(ob: Banger, reg: str) -> None:
    res = ob.run("image", "pull", f"{reg}/test/missing:v1")
    assert res.returncode == 1 and "not found" in res.stderr
    res = ob.run("image", "pull", f"{reg}/test/oci:v1", "--name", "tiny", "--size", "10M",
                 timeout=300)
    assert res.returncode == 1 and "too small" in res.stderr
    assert not (ob.home / "state" / "images" / "tiny").exists()
