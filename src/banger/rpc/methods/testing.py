"""Methods for tests and benchmarks only: a daemon serves them when it starts with
BANGER_TEST_METHODS=1 in its environment (read once, at start); otherwise they are unknown."""

from __future__ import annotations

from typing import Annotated

import msgspec

from banger.rpc.methods import Method

SWITCH = "BANGER_TEST_METHODS"


class SleepParams(msgspec.Struct, forbid_unknown_fields=True):
    seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4


class PutTarParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    tar: str  # a plain tar file on the host
    dest: str  # a guest directory


DEBUG_SLEEP = Method("debug.sleep", SleepParams, "dict[str, float]",
                     "Sleep in steps with progress: streaming and cancellation tests.", long=True,
                     api_only="test-only")
WORKSPACE_PUT_TAR = Method("workspace.put_tar", PutTarParams, "dict[str, object]",
                           "Extract a host tar under a guest dir: bench/workspace.py's baseline.",
                           long=True, api_only="benchmark-only")
