"""Workspaces: a host git repo shipped into a VM, the guest's work exported back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from banger.client.base import BaseClient, ProgressFn

if TYPE_CHECKING:
    from banger.rpc.methods.workspace import PrepareResult, WorkspaceExportResult
    from banger.workspace.payload import ShipOptions


class WorkspaceApi(BaseClient):
    def workspace_prepare(self, vm: str, path: str | Path, opts: ShipOptions | None = None, *,
                          force: bool = False,
                          on_progress: ProgressFn | None = None) -> PrepareResult:
        """Ship the git repo holding `path` into a running VM (git runs here, on the host).
        force=True replaces a guest checkout that holds unexported work."""
        from banger.rpc.methods.workspace import WORKSPACE_PREPARE, PrepareParams, PrepareResult
        from banger.workspace.payload import ShipOptions, prepared

        with prepared(path, opts or ShipOptions()) as shipment:
            assert shipment.payload is not None  # built: build=True is the default
            params = PrepareParams(vm, str(shipment.payload), shipment.plan, force)
            return self.call_as(WORKSPACE_PREPARE, params, PrepareResult,
                                on_progress=on_progress)

    def workspace_export(self, vm: str, output: str | Path, *, base: str | None = None,
                         on_progress: ProgressFn | None = None) -> WorkspaceExportResult:
        """Write the guest's commits (a bundle) and changes (a binary diff) to an export tar;
        read it with banger.workspace.exportfile.read_file, apply it with `vm workspace apply`."""
        from banger.rpc.methods.workspace import (
            WORKSPACE_EXPORT,
            WorkspaceExportParams,
            WorkspaceExportResult,
        )

        params = WorkspaceExportParams(vm, str(Path(output).resolve()), base)
        return self.call_as(WORKSPACE_EXPORT, params, WorkspaceExportResult,
                            on_progress=on_progress)
