"""Per-uid loopback blocks for user-mode VMs: root keeps 127.77.0.0/16, other uids one /24."""

from __future__ import annotations

import ipaddress

import pytest

from banger.errors import Conflict
from banger.net import plan


def test_root_keeps_the_old_pool() -> None:
    assert plan.loopback_pool(0) == ipaddress.IPv4Network("127.77.0.0/16")
    assert plan.allocate_loopback(set(), uid=0) == "127.77.0.2"


def test_each_uid_gets_its_own_block_outside_roots() -> None:
    assert plan.loopback_pool(1000) == ipaddress.IPv4Network("127.81.232.0/24")
    assert plan.loopback_pool(1) == ipaddress.IPv4Network("127.78.1.0/24")
    blocks = {plan.loopback_pool(uid) for uid in range(1, 5000)}
    assert len(blocks) == 4999  # distinct for every uid below USER_BLOCKS
    for block in blocks:
        assert not block.overlaps(plan.LOOPBACK_POOL) and block.subnet_of(
            ipaddress.IPv4Network("127.0.0.0/8"))
    top = plan.loopback_pool(plan.USER_BLOCKS - 1)
    assert top == ipaddress.IPv4Network("127.254.255.0/24")
    # the documented collision: uids equal modulo USER_BLOCKS share a block
    assert plan.loopback_pool(1000 + plan.USER_BLOCKS) == plan.loopback_pool(1000)


def test_allocation_stays_in_the_users_block() -> None:
    assert plan.allocate_loopback(set(), uid=1000) == "127.81.232.2"
    assert plan.allocate_loopback({"127.81.232.2"}, uid=1000) == "127.81.232.3"
    full = {f"127.81.232.{i}" for i in range(2, 255)}
    with pytest.raises(Conflict, match="no free loopback address"):
        plan.allocate_loopback(full, uid=1000)
