"""The RPC contract: every method's name, params struct, result, long flag and summary.

One module per area (`system`, `vm`, `image`, `kernel`, `template`, `workspace`), so a CLI
command imports only its area's structs; `table` gathers them all for the daemon, the docs test
and `docs/rpc.md`. `testing` holds the methods a daemon serves only under BANGER_TEST_METHODS=1.
The CLI names a method by its constant here and builds its params struct: a misspelt method or
field is a mypy error, and the daemon registers handlers only for methods listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

P = TypeVar("P", bound=msgspec.Struct)


@dataclass(frozen=True)
class Method(Generic[P]):
    name: str
    params: type[P]
    result: str  # the handler's return annotation, as written (its types live in the daemon)
    summary: str  # one line, as in docs/rpc.md
    long: bool = False  # long operations are kept in the operations history
    api_only: str = ""  # why the CLI never calls it; "" when it does


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


class NameParams(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class VmRef(msgspec.Struct, forbid_unknown_fields=True):
    vm: str


class CatalogRow(msgspec.Struct):
    """One row of the image or kernel catalog."""

    name: str
    kind: str
    description: str
    state: str  # pulled | available
    default: bool
