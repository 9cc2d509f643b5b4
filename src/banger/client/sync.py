"""`Client`: every area's typed calls on one blocking client."""

from __future__ import annotations

from banger.client.artifacts import ArtifactApi
from banger.client.execs import ExecApi
from banger.client.sessions import SessionApi
from banger.client.snapshots import SnapshotApi
from banger.client.vms import VmApi
from banger.client.workspace import WorkspaceApi


class Client(VmApi, ExecApi, SessionApi, WorkspaceApi, SnapshotApi, ArtifactApi):
    """Blocking client for this user's daemon; see docs/api.md. Thread-safe: each call opens
    its own connection, so threads may share one Client."""
