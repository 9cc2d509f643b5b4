"""Pure networking decisions: modes, addresses, port specs, DNS answers, QEMU args, ssh-config."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnslib import DNSRecord

from banger.dns.server import answer
from banger.errors import Conflict, InvalidArgument
from banger.net import plan
from banger.ssh import config as sshcfg
from banger.vmm.base import HostForward, NetworkAttachment
from banger.vmm.qemu.argv import net_args


def test_auto_is_tap_only_with_a_netns() -> None:
    assert plan.resolve_mode(None, "auto", "") == "user"
    assert plan.resolve_mode(None, "auto", "ns1") == "tap"
    assert plan.resolve_mode("user", "tap", "ns1") == "user"
    with pytest.raises(InvalidArgument):
        plan.resolve_mode("bridge", "auto", "")


def test_addresses_are_deterministic_and_exhaust_clearly() -> None:
    assert plan.allocate_ip("10.77.0.0/24", set()) == "10.77.0.2"
    assert plan.allocate_ip("10.77.0.0/24", {"10.77.0.2"}) == "10.77.0.3"
    with pytest.raises(Conflict, match="no free address left"):
        plan.allocate_ip("10.78.0.0/30", {"10.78.0.2"})
    assert plan.allocate_loopback(set()) == "127.77.0.2"
    assert plan.mac_for("abc") == plan.mac_for("abc") and plan.mac_for("abc").startswith("52:54:00")


def test_publish_specs() -> None:
    assert str(plan.parse_publish("8080:80")) == "8080:80"
    for bad in ("80", "a:b", "0:80", "70000:1"):
        with pytest.raises(InvalidArgument, match="HOSTPORT:GUESTPORT"):
            plan.parse_publish(bad)


def test_dns_answers() -> None:
    def ask(name: str, qtype: str = "A") -> DNSRecord:
        raw = answer(DNSRecord.question(name, qtype).pack(), {"web": "127.77.0.2"}.get)
        assert raw is not None
        return DNSRecord.parse(raw)

    assert [str(rr.rdata) for rr in ask("web.vm").rr] == ["127.77.0.2"]
    assert ask("WEB.vm.").header.aa == 1
    assert ask("nope.vm").header.rcode == 3
    assert ask("web.vm", "AAAA").rr == [] and ask("web.vm", "AAAA").header.rcode == 0
    assert ask("example.com").header.rcode == 5
    assert answer(b"garbage", lambda name: None) is None


def test_qemu_net_args() -> None:
    tap = net_args(NetworkAttachment("tap", tap="bt1", mac="52:54:00:00:00:01"))
    assert tap == ["-netdev", "tap,id=net0,ifname=bt1,script=no,downscript=no",
                   "-device", "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01"]
    user = net_args(NetworkAttachment("user", hostfwds=(HostForward("127.77.0.2", 22, 22),),
                                      restrict=False))
    assert user[1] == "user,id=net0,restrict=off,hostfwd=tcp:127.77.0.2:22-:22"
    assert net_args(None) == []


def test_ssh_config_install_round_trip(tmp_path: Path) -> None:
    user_config, include = tmp_path / ".ssh" / "config", tmp_path / "banger" / "ssh_config"
    block = sshcfg.host_block(Path("/k"), Path("/kh"), ["/opt/banger"])
    assert sshcfg.install(user_config, include, block) is True
    assert sshcfg.install(user_config, include, block) is False
    assert sshcfg.uninstall(user_config, include) is True
    assert user_config.read_text() == "" and not include.exists()
