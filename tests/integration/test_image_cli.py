"""Image commands end to end through the CLI and daemon: export, serve, pull back, refusals."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.network]


@pytest.fixture(scope="module")
def ib() -> Iterator[Banger]:
    with vm_lock(), vm_home(SLIM) as b:
        yield b


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_export_serve_pull_gives_identical_image(ib: Banger, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    res = ib.run("image", "export", SLIM, "-o", str(served), check=True, timeout=300)
    bundle = Path(res.stdout.strip())
    assert bundle.parent == served and bundle.name.startswith(f"{SLIM}-")
    assert bundle.name.endswith(".tar.zst")
    sha = res.stderr.split("sha256 ")[1].split()[0]
    original = json.loads(ib.run("image", "show", SLIM, check=True).stdout)
    url = f"{base}/{bundle.name}"
    try:
        ib.run("image", "pull", url, "--sha256", sha, "--name", "slim-copy", check=True, timeout=300)
        copy = json.loads(ib.run("image", "show", "slim-copy", check=True).stdout)
        assert copy["sha256"] == original["sha256"]
        names = [i["name"] for i in json.loads(ib.run("image", "list", "--json").stdout)]
        assert "slim-copy" in names
        bad = ib.run("image", "pull", url, "--sha256", "0" * 64, "--name", "slim-bad")
        assert bad.returncode == 1
        errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "sha256 is" in errors[0] and "expected 000" in errors[0]
        assert bad.stderr.strip().splitlines()[-1] == errors[0]
        assert "slim-bad" not in ib.run("image", "list", "--json").stdout
    finally:
        ib.run("image", "delete", "slim-copy")


def test_deleting_an_image_in_use_names_the_vm(ib: Banger) -> None:
    ib.run("vm", "create", "--name", "holder", "--no-start", check=True)
    try:
        res = ib.run("image", "delete", SLIM)
        assert res.returncode == 1
        assert "used by VM holder" in res.stderr
    finally:
        ib.run("vm", "delete", "holder", check=True)


def test_unknown_names_suggest_close_ones(ib: Banger) -> None:
    res = ib.run("image", "pull", "debian-bookwurm-slim")
    assert res.returncode == 1 and "did you mean debian-bookworm-slim" in res.stderr
    res = ib.run("kernel", "pull", "debian-bookworm-clod")
    assert res.returncode == 1 and "did you mean debian-bookworm-cloud" in res.stderr
    res = ib.run("image", "pull", "/no/such/file.tar.zst", "--sha256", "0" * 64)
    assert res.returncode == 2 and "no such file" in res.stderr


def test_kernel_list_and_catalog(ib: Banger) -> None:
    kernels = json.loads(ib.run("kernel", "list", "--json", check=True).stdout)
    assert [k["name"] for k in kernels] == ["debian-bookworm-cloud"]
    cat = json.loads(ib.run("kernel", "catalog", "--json", check=True).stdout)
    assert cat[0]["state"] == "pulled" and cat[0]["default"]
    images = json.loads(ib.run("image", "catalog", "--json", check=True).stdout)
    assert {i["name"]: i["state"] for i in images}[SLIM] == "pulled"
