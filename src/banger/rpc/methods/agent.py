"""agent.* methods: the coding-agent catalog, verified pulls, installing one into a VM."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NoParams


class AgentRow(msgspec.Struct):
    """One catalog agent and the versions in the host cache."""

    name: str
    package: str
    description: str
    acp: bool  # it has an ACP mode `banger vm acp` can bridge
    cached: list[str]  # versions, newest pull first


class AgentPullParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    version: str | None = None  # an npm version or dist-tag; None: `latest`
    registry: str | None = None  # None: the daemon asks npm's config
    force: bool = False


class AgentInstallParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    name: str
    version: str | None = None  # None: the newest cached version, else `latest` is pulled
    registry: str | None = None


AGENT_LIST = Method("agent.list", NoParams, "list[AgentRow]",
                    "Coding agents banger can fetch, and their cached versions.")
AGENT_PULL = Method("agent.pull", AgentPullParams, "AgentManifest",
                    "Fetch an agent's package from the npm registry, verify its integrity, cache "
                    "it (a cached version is not fetched again unless force).", long=True)
AGENT_INSTALL = Method("agent.install", AgentInstallParams, "Installed",
                       "Put a cached (or freshly pulled) agent into a running VM, unless it holds "
                       "that version already.", long=True)
