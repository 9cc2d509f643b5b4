"""`banger system install --root DIR` as root, its `.vm` part: the zone dir, the tmpfiles line,
the resolver file for a dnsmasq that runs, the record, and an uninstall that keeps an edited file.

No systemd here: the unit is checked by content in tests/unit/test_system_dns.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.roothelper.resolver import render_dnsmasq
from banger.roothelper.written import digest
from tests.polling import wait_until

BANGER = str(Path(sys.executable).parent / "banger")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="system install runs as root")


@pytest.fixture
def a_dnsmasq_runs() -> Iterator[None]:
    """A dnsmasq process (serving nothing: port 0) for install to find among the host's."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq-base, or `make install`)")
    proc = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--port=0", "--pid-file=",
                             "--conf-file=/dev/null"], stderr=subprocess.PIPE)
    wait_until(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "dnsmasq",
               "dnsmasq to run")
    yield
    proc.terminate()
    proc.communicate(timeout=10)


def banger(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    env["BANGER_ROOT_SOCKET"] = str(root / "none.sock")
    return subprocess.run([BANGER, "system", *args, "--root", str(root)], capture_output=True,
                          text=True, env=env, timeout=60)


def test_install_wires_dnsmasq_and_uninstall_keeps_an_edited_file(root: Path,
                                                                  a_dnsmasq_runs: None) -> None:
    (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "etc" / "dnsmasq.d").mkdir()
    res = banger(root, "install")
    assert res.returncode == 0, res.stderr
    zone = root / "run" / "banger" / "zone"
    st = zone.stat()
    gid = int(next(line.split(":")[2] for line in (root / "etc/group").read_text().splitlines()
                   if line.startswith("banger:")))
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == ("0o1775", 0, gid)
    conf = root / "etc" / "dnsmasq.d" / "banger.conf"
    assert conf.read_text() == render_dnsmasq()
    assert f"wrote {conf}" in res.stdout and ".vm wired into dnsmasq: restart it" in res.stdout
    tmpfiles = root / "etc" / "tmpfiles.d" / "banger.conf"
    assert "d /run/banger/zone 1775 root banger -" in tmpfiles.read_text()
    assert "runuser -u nobody -- " in res.stdout and "--zone-dir /run/banger/zone &" in res.stdout
    record = json.loads((root / "etc/banger/installed.json").read_text())
    assert {(f["path"], f["sha256"]) for f in record["files"]} == {
        (str(conf), digest(conf.read_bytes())), (str(tmpfiles), digest(tmpfiles.read_bytes()))}
    assert record["zone_dir_created"] is True
    status = json.loads(banger(root, "status", "--json").stdout)["dns"]
    assert status["resolver"] == str(conf) and "mode 1775" in status["zone_dir"]
    assert "nothing answers .vm" in status["service"] or "answers on" in status["service"]
    again = banger(root, "install")
    assert f"kept {conf}" in again.stdout and f"kept {zone}" in again.stdout

    tmpfiles.write_text(tmpfiles.read_text() + "d /run/mine 0755 root root -\n")  # an admin edit
    res = banger(root, "uninstall")
    assert res.returncode == 0, res.stderr
    assert f"removed {conf}" in res.stdout and f"kept {tmpfiles}: changed since" in res.stdout
    assert not conf.exists() and tmpfiles.exists() and not zone.exists()
    assert (root / "etc" / "dnsmasq.d").is_dir()  # the resolver's own dir stays


def test_without_a_resolver_install_says_how_to_wire_it_by_hand(root: Path) -> None:
    (root / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    res = banger(root, "install")
    assert res.returncode == 0, res.stderr
    assert "no supported resolver found (systemd-resolved or dnsmasq)" in res.stdout
    assert "server=/vm/127.0.0.1#42069" in res.stdout
    out = banger(root, "status").stdout
    assert "resolver not wired by banger" in out and "zones" in out
    assert banger(root, "uninstall").returncode == 0
    assert not (root / "run" / "banger").exists() and not (root / "etc" / "tmpfiles.d").exists()
