"""The coding agents banger knows: where each one's Linux x64 build lives on the npm registry,
which of its files run in a guest, and how it is started (ACP mode, interactive UI).

Checked against the registry's real packages (`npm pack` of each, December 2026): every one is
a single native binary; opencode and claude link glibc (the default Debian image has it), codex
is static (musl).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from banger.errors import InvalidArgument

NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# npm versions (semver with pre-release/build parts) and dist-tags: one token of these characters.
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")  # fullmatch only
EXACT_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.+_-]{1,56})?")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    package: str  # the npm package holding the Linux x64 build
    binary: str  # the executable, relative to the package root
    extra: tuple[str, ...] = ()  # other files the binary uses in the guest
    version_suffix: str = ""  # codex publishes its platform builds as versions `X-linux-x64`
    acp: tuple[str, ...] | None = None  # argv after the binary for ACP on stdio; None: none
    ui: tuple[str, ...] = ()  # argv after the binary for its interactive terminal UI
    no_acp: str = ""  # what to use instead, when it has no ACP mode of its own

    @property
    def files(self) -> tuple[str, ...]:
        return (self.binary, *self.extra)

    def npm_version(self, version: str) -> str:
        return version + self.version_suffix


_CODEX_DIR = "vendor/x86_64-unknown-linux-musl"

AGENTS: dict[str, AgentSpec] = {a.name: a for a in (
    AgentSpec("opencode", "opencode (sst): terminal UI, and ACP with `opencode acp`",
              "opencode-linux-x64", "bin/opencode", acp=("acp",)),
    AgentSpec("codex", "OpenAI Codex CLI (static musl build)", "@openai/codex",
              f"{_CODEX_DIR}/bin/codex", extra=(f"{_CODEX_DIR}/codex-path/rg",),
              version_suffix="-linux-x64",
              no_acp="codex has no ACP mode; editors use Zed's codex-acp adapter, not shipped"),
    AgentSpec("claude", "Claude Code (Anthropic)", "@anthropic-ai/claude-code-linux-x64", "claude",
              no_acp="Claude Code has no ACP mode; editors use Zed's claude-code-acp adapter "
                     "(a Node program), not shipped"),
)}


def agent_spec(name: str) -> AgentSpec:
    spec = AGENTS.get(name)
    if spec is None:
        raise InvalidArgument(f"unknown agent {name[:40]!r}; banger knows "
                              f"{', '.join(sorted(AGENTS))} (`banger agent list`)")
    return spec


def parse_ref(ref: str) -> tuple[AgentSpec, str | None]:
    """NAME or NAME@VERSION (VERSION may be a dist-tag such as `latest`)."""
    name, sep, version = ref.partition("@")
    spec = agent_spec(name)
    if not sep:
        return spec, None
    if not VERSION.fullmatch(version):
        raise InvalidArgument(f"{ref[:80]!r}: VERSION must be an npm version or dist-tag "
                              "(letters, digits, '.', '+', '_', '-')")
    return spec, version


__all__ = ["AGENTS", "EXACT_VERSION", "VERSION", "AgentSpec", "agent_spec", "parse_ref"]
