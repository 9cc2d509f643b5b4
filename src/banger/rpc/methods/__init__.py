"""The RPC contract: every method's name, params struct, result, long flag and summary.

One module per area (`system`, `vm`, `image`, `kernel`, `template`, `workspace`), so a CLI
command imports only its area's structs; `table` gathers them all for the daemon, the docs test
and `docs/rpc.md`. `testing` holds the methods a daemon serves only under BANGER_TEST_METHODS=1.
The CLI names a method by its constant here and builds its params struct: a misspelt method or
field is a mypy error, and the daemon registers handlers only for methods listed here.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

P = TypeVar("P", bound=msgspec.Struct)


class Method(Generic[P]):
    """One RPC method. A plain class: a dataclass would cost every CLI start most of a ms."""

    __slots__ = ("api_only", "long", "name", "params", "result", "summary")

    def __init__(self, name: str, params: type[P], result: str, summary: str, *,
                 long: bool = False, api_only: str = "") -> None:
        self.name = name
        self.params = params
        self.result = result  # the handler's return annotation, as written
        self.summary = summary  # one line, as in docs/rpc.md
        self.long = long  # long operations are kept in the operations history
        self.api_only = api_only  # why the CLI never calls it; "" when it does

    def __repr__(self) -> str:
        return f"Method({self.name!r})"


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
