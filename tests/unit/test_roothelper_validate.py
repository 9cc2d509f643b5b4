"""The root helper's request validation: pure functions, no sockets, no root."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from banger.errors import ConfigError, Conflict, InvalidArgument
from banger.net import admin, rootwire
from banger.net.plan import tap_name
from banger.roothelper.config import RootConfig, load_root_config, render_root_config

CIDR = "10.77.0.0/24"
FULLWIDTH = "".join(chr(0xFF10 + i) for i in range(10))  # digits int() would accept
ARABIC_INDIC = "".join(chr(0x0660 + i) for i in range(10))


def test_banger_tap_names_pass() -> None:
    assert admin.check_tap_name(tap_name("0123456789ab")) == "bt0123456789ab"


@pytest.mark.parametrize("name", [
    "eth0", "br-banger", "lo", "bt", "bt0123456789a", "bt0123456789abc", "bt0123456789AB",
    "bt0123456789a/", "bt../../etc/x", "bt0123456789a\n", "bt0123456789ab\n",
    "bt01234567\x0089ab", f"bt{FULLWIDTH}ab", " bt0123456789ab", "",
])
def test_foreign_or_odd_tap_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a banger tap name"):
        admin.check_tap_name(name)


@pytest.mark.parametrize("vm_id", ["", "0123456789a", "0123456789abc", "../etc", "0123456789aB",
                                   "0123456789ab\n", f"{ARABIC_INDIC}ab"])
def test_odd_vm_ids_are_refused(vm_id: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a banger VM id"):
        admin.check_vm_id(vm_id)


def test_vm_addresses_inside_the_subnet_pass() -> None:
    assert admin.check_vm_address("10.77.0.2", CIDR) == "10.77.0.2"
    assert admin.check_vm_address("10.77.0.254", CIDR) == "10.77.0.254"


@pytest.mark.parametrize("ip", [
    "10.78.0.2", "192.168.1.5", "0.0.0.0", "10.77.0.0", "10.77.0.1", "10.77.0.255",
    "10.77.0.02", "010.77.0.2", " 10.77.0.2", "10.77.0.2/32", "10.77.0.0/24", "::1", "x", "",
])
def test_other_subnets_gateway_and_odd_spellings_are_refused(ip: str) -> None:
    with pytest.raises(InvalidArgument, match="refused"):
        admin.check_vm_address(ip, CIDR)


def test_valid_requests_decode_to_their_types() -> None:
    req = rootwire.decode_request(b'{"op": "tap_add", "name": "bt0123456789ab", '
                                  b'"ip": "10.77.0.2", "mac": "52:54:00:12:34:56"}')
    assert req == rootwire.TapAdd("bt0123456789ab", "10.77.0.2", "52:54:00:12:34:56")
    assert rootwire.decode_request(b'{"op":"info"}') == rootwire.Info()


@pytest.mark.parametrize("data, why", [
    (b'{"op": "exec", "argv": ["sh"]}', "Invalid value 'exec'"),
    (b'{"op": "tap_add", "name": "bt0123456789ab", "ip": "10.77.0.2", "mac": "52:54:00:12:34:56", '
     b'"owner": 0}', "unknown field `owner`"),
    (b'{"op": "bridge_up", "name": "eth0"}', "unknown field `name`"),
    (b'{"op": "tap_add", "name": "' + b"b" * 16 + b'"}', "length <= 15"),
    (b'{"op": "tap_add"}', "missing required field `name`"),
    (b'{"op": "tap_add", "name": 7}', "Expected `str`"),
    (b"not json", "malformed"),
    (b"", "malformed"),
    (b'[{"op": "info"}]', "Expected `object`"),
])
def test_malformed_requests_are_refused_in_one_line(data: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        rootwire.decode_request(data)
    assert why in info.value.message and "\n" not in info.value.message


def test_oversized_requests_are_refused_before_parsing() -> None:
    data = b'{"op": "info", "pad": "' + b"x" * rootwire.MAX_REQUEST + b'"}'
    with pytest.raises(InvalidArgument, match=f"larger than {rootwire.MAX_REQUEST} bytes"):
        rootwire.decode_request(data)


def test_an_error_reply_comes_back_as_the_same_error() -> None:
    wire = rootwire.error_reply(Conflict("refused: tap bt0123456789ab belongs to uid 1001"))
    with pytest.raises(Conflict, match="belongs to uid 1001"):
        rootwire.decode_reply(wire)
    ok = rootwire.decode_reply(msgspec.json.encode(rootwire.Reply(ok=True, existed=True)))
    assert ok.existed


def test_root_config_round_trips_and_refuses_bad_values(tmp_path: Path) -> None:
    file = tmp_path / "root.toml"
    assert load_root_config(file) == RootConfig()  # missing: the defaults
    cfg = RootConfig(bridge_name="br-x", bridge_cidr="10.9.0.0/24", group="banger")
    file.write_text(render_root_config(cfg))
    assert load_root_config(file) == cfg
    for bad, key in (('bridge_cidr = "8.8.8.0/24"', "bridge_cidr"),
                     ('bridge_cidr = "10.9.0.0/31"', "bridge_cidr"),
                     ('bridge_name = "br/../x"', "bridge_name"),
                     ('group = "root; rm"', "group")):
        file.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=key):
            load_root_config(file)
    file.write_text('netns = "x"\n')
    with pytest.raises(ConfigError, match="unknown field `netns`"):
        load_root_config(file)
