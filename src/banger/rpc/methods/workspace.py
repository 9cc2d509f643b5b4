"""workspace.* methods: ship a payload the CLI built into a guest repo, export the work back.

The CLI and the daemon share a host and a user, so payloads and exports pass as file paths.
"""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method
from banger.workspace.payload import Plan


class PrepareParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    payload: str  # the payload tar's path
    plan: Plan
    force: bool = False


class PrepareResult(msgspec.Struct):
    vm: str
    base: str
    guest_path: str
    cwd: str
    tooling: str | None  # the tool bootstrap's summary, None when nothing is pinned


class WorkspaceExportParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    output: str  # absolute path of the export file to write
    base: str | None = None


class WorkspaceExportResult(msgspec.Struct):
    vm: str
    output: str
    commits: int
    files: int
    workspace: dict[str, str] | None


WORKSPACE_PREPARE = Method("workspace.prepare", PrepareParams, "PrepareResult",
                           "Ship a host repo's payload into a VM and check it out.", long=True)
WORKSPACE_EXPORT = Method("workspace.export", WorkspaceExportParams, "WorkspaceExportResult",
                          "Collect a VM's commits and changes into an export file.", long=True)
