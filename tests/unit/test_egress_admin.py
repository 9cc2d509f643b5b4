"""The root side of tap egress: what net.admin lets through to nftables, and the wire's bounds.
Everything here comes from a local user's daemon, so it is checked as if hostile."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from banger.errors import InvalidArgument
from banger.net import admin, rootwire
from banger.net.admin import Bridge, check_allowed
from banger.net.egress import tapfilter
from banger.net.egress.nftset import Allowed

BRIDGE = Bridge("br-banger", "10.77.0.0/24")
GOOD = Allowed(pairs=(("93.184.216.34", 443),), every=("10.200.0.2",),
               networks=(("10.0.0.0/8", 22), ("192.0.2.7/32", None)), host_ports=(8000,))


def test_a_normal_request_passes() -> None:
    assert check_allowed(GOOD) is GOOD


@pytest.mark.parametrize("bad", [
    Allowed(pairs=(("127.0.0.1", 80),)), Allowed(every=("127.9.9.9",)),
    Allowed(every=("010.0.0.1",)), Allowed(every=("::1",)), Allowed(every=("1.2.3.4 ; flush",)),
    Allowed(pairs=(("1.2.3.4", 0),)), Allowed(pairs=(("1.2.3.4", 70000),)),
    Allowed(host_ports=(0,)), Allowed(networks=(("10.0.0.1/8", None),)),
    Allowed(networks=(("127.0.0.0/8", 80),)), Allowed(networks=(("0.0.0.0/0", None),)),
    Allowed(networks=(("10.0.0.0/8 accept", None),)), Allowed(networks=(("10.0.0.0/8", 0),)),
    Allowed(every=tuple(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(16385))),
])
def test_anything_else_is_refused_in_one_line(bad: Allowed) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_allowed(bad)
    assert info.value.message.startswith("refused: ") and "\n" not in info.value.message


@pytest.mark.parametrize(("vm_id", "ip", "resolver", "why"), [
    ("0123456789ab", "10.77.0.1", 40000, "not a VM address"),  # the gateway
    ("0123456789ab", "10.78.0.2", 40000, "not a VM address"),
    ("../../etc", "10.77.0.2", 40000, "not a banger VM id"),
    ("0123456789ab", "10.77.0.2", 53, "out of range"),  # the caller's socket: unprivileged
])
def test_enable_checks_its_fields_before_anything_runs(vm_id: str, ip: str, resolver: int,
                                                       why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        asyncio.run(admin.egress_enable(BRIDGE, vm_id, ip, resolver, 40001, GOOD, 1000))


def test_the_wire_bounds_requests_before_decoding_them() -> None:
    sets = rootwire.EgressSets.of(GOOD)
    request = rootwire.EgressEnable("0123456789ab", "10.77.0.2", 40000, 40001, sets)
    assert rootwire.decode_request(msgspec.json.encode(request)) == request
    assert rootwire.EgressSets.of(GOOD).allowed() == GOOD
    for bad in ('{"op": "egress_update", "vm_id": "x", "sets": {"every": ["1.1.1.1"], "x": 1}}',
                '{"op": "egress_update", "vm_id": "x", "sets": {"pairs": [["1.1.1.1", 0]]}}',
                '{"op": "egress_update", "vm_id": "x", "sets": {"every": ["' + "1" * 40 + '"]}}',
                '{"op": "egress_enable", "vm_id": "x", "ip": "y", "resolver_port": 1, '
                '"proxy_port": 99999, "sets": {}}'):
        with pytest.raises(InvalidArgument, match="malformed request"):
            rootwire.decode_request(bad.encode())
    huge = {"op": "egress_update", "vm_id": "x", "sets": {"every": ["1.1.1.1"] * 16385}}
    with pytest.raises(InvalidArgument, match="malformed request"):
        rootwire.decode_request(msgspec.json.encode(huge))


def test_only_a_vms_own_egress_tags_are_its_own() -> None:
    assert tapfilter._tag_of("0123456789ab", "banger:0123456789ab:1001:egress") == 1001
    for other in ("banger:0123456789ab:1001", "banger:0123456789ac:1001:egress",
                  "banger:0123456789ab:x:egress", None, "banger:base"):
        assert tapfilter._tag_of("0123456789ab", other) is None
