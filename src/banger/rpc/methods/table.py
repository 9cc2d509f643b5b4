"""Every method of the contract by name: what the daemon may register and docs/rpc.md lists."""

from __future__ import annotations

from typing import Any

from banger.rpc.methods import (
    Method,
    agent,
    image,
    kernel,
    pool,
    session,
    snapshot,
    system,
    template,
    testing,
    ui,
    vm,
    workspace,
)


def _gather(*modules: Any) -> dict[str, Method[Any]]:
    found = [v for m in modules for v in vars(m).values() if isinstance(v, Method)]
    return {m.name: m for m in found}


CONTRACT: dict[str, Method[Any]] = _gather(system, vm, image, kernel, template, workspace, session,
                                           ui, pool, agent, snapshot)
TEST_METHODS: dict[str, Method[Any]] = _gather(testing)
