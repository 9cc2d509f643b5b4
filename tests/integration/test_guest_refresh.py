"""An image made by an older banger gets this banger's guest agent at boot, with no rebuild.

The image here is the cached slim image with its agent broken the way an old one would be
missing ops (a module that exits on import) and no stamp: without the initramfs overlay the VM
never gets an agent. Real VMs under QEMU.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from banger.download import sha256_file
from banger.guest import GUEST_STAMP, guest_files_digest
from banger.images.ext4 import debugfs_batch
from banger.images.manifest import MANIFEST, ROOTFS, read_manifest, write_manifest
from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.timeout(900)]
STALE = "stale-agent"
CORE = "/usr/local/lib/banger/agent/core.py"


def make_stale_image(src: Path, dest: Path, tmp: Path) -> None:
    dest.mkdir()
    shutil.copyfile(src / ROOTFS, dest / ROOTFS)
    broken = tmp / "core.py"
    broken.write_text("raise SystemExit('an agent from an older banger')\n")
    script = (f'cd "{CORE.rsplit("/", 1)[0]}"\nrm core.py\nwrite "{broken}" core.py\n'
              f'rm "{GUEST_STAMP}"\n')
    asyncio.run(debugfs_batch(dest / ROOTFS, script))
    old = read_manifest(src / MANIFEST)
    write_manifest(dest / MANIFEST, msgspec.structs.replace(
        old, name=STALE, sha256=sha256_file(dest / ROOTFS), guest_files="0123456789abcdef"))


@pytest.fixture(scope="module")
def vb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        images = b.home / "state" / "images"
        shared = images.resolve()
        images.unlink()  # this home gets its own images dir: the shared cache stays untouched
        images.mkdir()
        (images / SLIM).symlink_to(shared / SLIM)
        make_stale_image(shared / SLIM, images / STALE, tmp_path_factory.mktemp("stale"))
        yield b


@pytest.mark.parametrize("start", ["--cold", "template"])
def test_old_image_boots_with_the_current_agent(vb: Banger, start: str) -> None:
    flags = ["--cold"] if start == "--cold" else []
    res = vb.run("vm", "run", "--rm", "--image", STALE, *flags, "--",
                 "sh", "-c", f"cat {GUEST_STAMP}; grep -c 'an agent from an older' {CORE} || true",
                 timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [guest_files_digest(), "0"]
