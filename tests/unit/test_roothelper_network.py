"""The daemon's side of tap mode when it is not root: Network through the root helper's client.

The daemon here lacks CAP_NET_ADMIN (patched) and its helper socket is a path with nothing on it,
or a tiny stand-in server answering `info`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from banger.config import load_config
from banger.errors import Conflict, InvalidArgument, Unavailable
from banger.net import links, rootwire
from banger.net.plan import VmNet
from banger.net.privileged import HelperClient
from banger.net.service import Network
from banger.paths import Paths, resolve_paths
from banger.vmm.qemu import QemuBackend


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    monkeypatch.setattr(links, "has_net_admin", lambda: False)
    monkeypatch.setenv("BANGER_ROOT_SOCKET", str(tmp_path / "root.sock"))
    p = resolve_paths({"BANGER_HOME": str(tmp_path)})
    p.config_dir.mkdir(parents=True)
    return p


@pytest.fixture
def fake_helper(tmp_path: Path) -> Iterator[None]:
    """Answers `info` with subnet 10.77.0.0/24; the client insists on a root peer, as here."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "root.sock"))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(msgspec.json.encode(rootwire.Reply(ok=True, bridge="br-banger",
                                                                cidr="10.77.0.0/24")))

    threading.Thread(target=serve, daemon=True).start()
    yield
    server.close()


def test_tap_without_the_helper_fails_at_create_saying_how_to_install_it(paths: Paths) -> None:
    net = Network(paths, load_config(paths), QemuBackend())
    assert isinstance(net.privileged, HelperClient)
    with pytest.raises(Unavailable) as info:
        net.mode("tap")
    assert "sudo banger system install" in info.value.message
    assert "--net user" in info.value.message and "\n" not in info.value.message
    assert net.mode(None) == "user"  # auto stays user mode


@pytest.mark.skipif(os.geteuid() != 0, reason="the client accepts only a root helper")
def test_tap_through_the_helper_needs_its_subnet(paths: Paths, fake_helper: None) -> None:
    net = Network(paths, load_config(paths), QemuBackend())
    assert net.mode("tap") == "tap"
    paths.config_file.write_text('bridge_cidr = "10.99.0.0/24"\n')
    other = Network(paths, load_config(paths), QemuBackend())
    with pytest.raises(Conflict, match=r'set bridge_cidr = "10.77.0.0/24"'):
        other.mode("tap")
    paths.config_file.write_text('netns = "ns1"\n')
    with pytest.raises(InvalidArgument, match="needs a root daemon"):
        Network(paths, load_config(paths), QemuBackend()).mode("tap")


def test_teardown_with_the_helper_gone_leaves_the_vm_deletable(
        paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    net = Network(paths, load_config(paths), QemuBackend())
    vm = VmNet(id="0123456789ab", name="web", mode="tap", nat=True, ip="10.77.0.2")
    with caplog.at_level(logging.WARNING, logger="banger.net"):
        asyncio.run(net.teardown(vm))
    assert "left web's tap, NAT and egress rules: no root helper listening" in caplog.text
