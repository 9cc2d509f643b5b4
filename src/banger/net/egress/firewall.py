"""The packet filter inside an egress VM's own network namespace (nftables, no root needed:
the daemon's user owns that namespace).

QEMU's user-mode stack opens a host socket for each guest connection, in that namespace, so the
output hook sees every one: allowed address.port pairs go out (through slirp4netns), the host
alias (127.0.0.1 there) is redirected to the daemon's proxy, the guest's DNS reaches the daemon's
resolver, and everything else is refused at once (TCP reset, ICMP unreachable) and remembered in
a set the daemon reads for `vm logs --egress`.
"""

from __future__ import annotations

from banger.egress_rules import LOOPBACK
from banger.errors import Unavailable
from banger.net.egress.nftset import (
    Allowed,
    Names,
    add,
    declarations,
    fill,
    parse_denied,
    verdict,
)
from banger.runner import arun, which

TABLE = "inet banger_egress"
NAMES = Names()
# In the VM's private namespace: where redirected host-alias connections and DNS land.
PROXY_PORT = 61000
DNS_PORT = 53
# Never a target: loopback (the host alias is redirected before this), and slirp4netns's side of
# the namespace (its resolver at .3 would skip banger's).
SLIRP_NET = "10.0.2.0/24"
NEVER = (str(LOOPBACK), SLIRP_NET)


def nft_binary() -> str:
    path = which("nft")
    if path is None:
        raise Unavailable("--allow needs nftables to enforce the rules: apt-get install nftables")
    return path


def nsenter_argv(pid: int, *argv: str) -> list[str]:
    """argv in the user and network namespace of pid (a QEMU the daemon's user started)."""
    return ["nsenter", "--target", str(pid), "--user", "--net", "--preserve-credentials",
            "--", *argv]


def ruleset(allow: Allowed) -> str:
    """The whole table, loaded before QEMU starts (the namespace is never open)."""
    n = NAMES
    body = "\n    ".join([
        *declarations(n),
        "chain nat_out {",
        "    type nat hook output priority -100; policy accept;",
        f"    ip daddr 127.0.0.1 tcp dport @{n.hosts} redirect to :{PROXY_PORT}",
        "}",
        "chain out {",
        "    type filter hook output priority 0; policy drop;",
        "    ct direction reply accept",  # answers: the resolver's, QEMU's forwarded ports'
        "    ct state related accept",
        "    ct status dnat accept",  # a host-alias connection, redirected to the gate's proxy
        f"    oif lo ip daddr 127.0.0.1 udp dport {DNS_PORT} accept",
        *(f"    {rule}" for rule in verdict(n, NEVER)),
        "}",
    ])
    return f"table {TABLE} {{\n    {body}\n}}\n{fill(TABLE, n, allow)}"


def update(allow: Allowed) -> str:
    return fill(TABLE, NAMES, allow)


def grant(allow: Allowed) -> str:
    return "\n".join(add(TABLE, NAMES, allow)) + "\n"


async def apply(pid: int, script: str) -> None:
    await arun(nsenter_argv(pid, nft_binary(), "-f", "-"), input=script.encode(), timeout=10,
               what="nft (egress rules)")


async def denied(pid: int) -> list[tuple[str, str, int]]:
    """(address, protocol, port) of every connection the namespace refused lately."""
    res = await arun(nsenter_argv(pid, nft_binary(), "-j", "list", "set", *TABLE.split(),
                                  NAMES.denied), timeout=10, what="nft (egress log)")
    return parse_denied(res.stdout)


__all__ = ["DNS_PORT", "PROXY_PORT", "apply", "denied", "grant", "nsenter_argv", "ruleset",
           "update"]
