"""The root helper's wire format: one JSON request per connection, one JSON reply, both capped.

Requests are a closed set of typed structs (tag `op`); unknown ops and unknown or oversized
fields are refused by decoding, before any operation runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from banger.errors import BangerError, InvalidArgument
from banger.net.egress.nftset import MAX_ELEMENTS, Allowed
from banger.textsafe import one_line

MAX_REQUEST = 1 << 20  # egress sets; every other request is under 150 bytes
MAX_REPLY = 1 << 18  # an egress log of MAX_DENIED entries
Name = Annotated[str, msgspec.Meta(max_length=15)]  # IFNAMSIZ - 1
Field = Annotated[str, msgspec.Meta(max_length=64)]


class _Op(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op"):
    pass


class Info(_Op, frozen=True, tag="info"):
    """The helper's bridge settings (the daemon allocates addresses in that subnet)."""


class BridgeUp(_Op, frozen=True, tag="bridge_up"):
    pass


class TapAdd(_Op, frozen=True, tag="tap_add"):
    name: Name
    ip: Field  # the VM's address and MAC: the tap is pinned to them
    mac: Field


class TapDelete(_Op, frozen=True, tag="tap_delete"):
    name: Name


class NatEnable(_Op, frozen=True, tag="nat_enable"):
    vm_id: Field
    ip: Field


class NatDisable(_Op, frozen=True, tag="nat_disable"):
    vm_id: Field


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Address = Annotated[str, msgspec.Meta(max_length=18)]
Many = msgspec.Meta(max_length=MAX_ELEMENTS)


class EgressSets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """nftset.Allowed on the wire; net.admin checks every element again."""

    pairs: Annotated[list[tuple[Address, Port]], Many] = []
    every: Annotated[list[Address], Many] = []
    networks: Annotated[list[tuple[Address, Port | None]], msgspec.Meta(max_length=256)] = []
    host_ports: Annotated[list[Port], msgspec.Meta(max_length=256)] = []

    @classmethod
    def of(cls, allow: Allowed) -> EgressSets:
        return cls(list(allow.pairs), list(allow.every), list(allow.networks),
                   list(allow.host_ports))

    def allowed(self) -> Allowed:
        return Allowed(tuple(self.pairs), tuple(self.every), tuple(self.networks),
                       tuple(self.host_ports))


class EgressEnable(_Op, frozen=True, tag="egress_enable"):
    vm_id: Field
    ip: Field
    resolver_port: Port
    proxy_port: Port
    sets: EgressSets


class EgressUpdate(_Op, frozen=True, tag="egress_update"):
    vm_id: Field
    sets: EgressSets
    add_only: bool = False


class EgressDenied(_Op, frozen=True, tag="egress_denied"):
    vm_id: Field


class EgressDisable(_Op, frozen=True, tag="egress_disable"):
    vm_id: Field


Request = (Info | BridgeUp | TapAdd | TapDelete | NatEnable | NatDisable | EgressEnable
           | EgressUpdate | EgressDenied | EgressDisable)


class Reply(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ok: bool
    error: dict[str, Any] | None = None
    bridge: str = ""
    cidr: str = ""
    existed: bool = False
    denied: Annotated[list[tuple[Address, Annotated[str, msgspec.Meta(max_length=8)], Port]],
                      msgspec.Meta(max_length=4096)] = []


def decode_request(data: bytes) -> Request:
    if len(data) > MAX_REQUEST:
        raise InvalidArgument(f"refused: request larger than {MAX_REQUEST} bytes")
    try:
        request: Request = msgspec.json.decode(data, type=Request)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"refused: malformed request: {one_line(str(exc), 200)}") from None
    return request


def decode_reply(data: bytes) -> Reply:
    """A reply, or the helper's error raised as the BangerError it was."""
    if len(data) > MAX_REPLY:
        raise InvalidArgument(f"the root helper's reply is larger than {MAX_REPLY} bytes")
    try:
        reply = msgspec.json.decode(data, type=Reply)
    except msgspec.DecodeError as exc:
        raise InvalidArgument("the root helper sent a malformed reply: "
                              f"{one_line(str(exc), 200)}") from None
    if not reply.ok:
        raise BangerError.from_wire(reply.error or {})
    return reply


def error_reply(exc: BangerError) -> bytes:
    return msgspec.json.encode(Reply(ok=False, error=exc.to_wire()))

