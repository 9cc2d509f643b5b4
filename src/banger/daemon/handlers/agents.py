"""agent.* methods: the catalog, pulls (banger.agents.pull), installs into guests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from banger.agents import cache
from banger.agents.cache import AgentManifest
from banger.agents.catalog import AGENTS, AgentSpec, agent_spec
from banger.agents.pull import pull
from banger.agents.registry import checked_registry, configured_registry
from banger.agents.ship import Installed, install
from banger.daemon.context import Context
from banger.daemon.registry import method
from banger.errors import InvalidArgument
from banger.rpc.methods import NoParams
from banger.rpc.methods.agent import (
    AGENT_INSTALL,
    AGENT_LIST,
    AGENT_PULL,
    AgentInstallParams,
    AgentPullParams,
    AgentRow,
)


@method(AGENT_LIST)
async def agent_list(ctx: Context, _: NoParams) -> list[AgentRow]:
    paths = ctx.daemon.paths
    return [AgentRow(a.name, a.package, a.description, a.acp is not None,
                     [m.version for m in cache.cached_versions(paths, a.name)])
            for a in AGENTS.values()]


def _registry(spec: AgentSpec, given: str | None) -> str | Callable[[], Awaitable[str]]:
    if given is not None:
        return checked_registry(given)

    async def ask_npm() -> str:  # only when the cache cannot answer
        return await asyncio.to_thread(configured_registry, spec.package)
    return ask_npm


def _spec(name: str, version: str | None) -> AgentSpec:
    from banger.agents.catalog import VERSION

    if version is not None and not VERSION.fullmatch(version):
        raise InvalidArgument(f"{version[:80]!r} is not an npm version or dist-tag")
    return agent_spec(name)


@method(AGENT_PULL)
async def agent_pull(ctx: Context, p: AgentPullParams) -> AgentManifest:
    spec = _spec(p.name, p.version)
    return await pull(ctx.daemon.paths, spec, p.version, _registry(spec, p.registry),
                      force=p.force, progress=ctx.progress)


@method(AGENT_INSTALL)
async def agent_install(ctx: Context, p: AgentInstallParams) -> Installed:
    spec = _spec(p.name, p.version)
    newest = cache.cached_versions(ctx.daemon.paths, spec.name) if p.version is None else []
    if newest:  # no version asked: what is cached (editors start this often; no network)
        manifest = newest[0]
    else:
        manifest = await pull(ctx.daemon.paths, spec, p.version, _registry(spec, p.registry),
                              progress=ctx.progress)
    vm, agent = await ctx.daemon.vms.agent_for(p.vm)
    acp = list(spec.acp) if spec.acp is not None else None
    return await install(agent, vm.name, manifest, acp, list(spec.ui), ctx.progress,
                         ctx.daemon.vms.payload_file(vm))
