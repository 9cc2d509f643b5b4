"""The RPC contract (banger.rpc.methods) held against docs/rpc.md, the daemon's method table and
the CLI's calls. `python -m tests.unit.test_rpc_contract` prints the docs tables."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from banger.daemon.main import _load_handlers
from banger.daemon.registry import METHODS, check_handler, method
from banger.rpc.client import Client
from banger.rpc.methods import (
    Method,
    NoParams,
    agent,
    image,
    kernel,
    pool,
    snapshot,
    system,
    template,
    testing,
    vm,
)
from banger.rpc.methods import session as sessions
from banger.rpc.methods import ui as web
from banger.rpc.methods import workspace as ws
from banger.rpc.methods.table import CONTRACT, TEST_METHODS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "rpc.md"
CLI_SOURCES = [*sorted((ROOT / "src/banger/cli").glob("*.py")),
               ROOT / "src/banger/doctor/state_checks.py"]  # `banger doctor` asks the daemon
AREAS = [system, vm, image, kernel, template, ws, sessions, web, pool, agent, snapshot, testing]
HEADER = "| method | params | result | long | what it does |\n|---|---|---|---|---|"


def params_cell(params: type[msgspec.Struct]) -> str:
    fields = msgspec.structs.fields(params)
    shown = [f.name if f.required else f"{f.name}={json.dumps(_default(f))}" for f in fields]
    return f"`{params.__name__}`" + (f" ({', '.join(shown)})" if shown else "")


def _default(field: msgspec.structs.FieldInfo) -> Any:
    return field.default_factory() if field.default is msgspec.NODEFAULT else field.default


def what_it_does(m: Method[Any]) -> str:
    return m.summary + (f" API only: {m.api_only}." if m.api_only and m.name in CONTRACT else "")


def render(methods: dict[str, Method[Any]]) -> str:
    rows = [f"| `{m.name}` | {params_cell(m.params)} | `{m.result}` | {'yes' if m.long else 'no'} "
            f"| {what_it_does(m)} |" for m in sorted(methods.values(), key=lambda m: m.name)]
    return "\n".join([HEADER, *rows])


def doc_table(heading: str) -> str:
    """The table under a `## heading` of docs/rpc.md."""
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_docs_tables_are_the_contract() -> None:
    assert doc_table("Methods") == render(CONTRACT)
    assert doc_table("Test-only methods") == render(TEST_METHODS)


def test_every_method_is_in_the_table_once_and_rejects_unknown_fields() -> None:
    everywhere = [v for area in AREAS for v in vars(area).values() if isinstance(v, Method)]
    assert len({m.name for m in everywhere}) == len(everywhere) == len(CONTRACT) + len(TEST_METHODS)
    assert not set(CONTRACT) & set(TEST_METHODS)
    assert all(m.params.__struct_config__.forbid_unknown_fields for m in everywhere)
    assert all(m.api_only for m in TEST_METHODS.values())


def test_a_normal_daemon_registers_exactly_the_contract() -> None:
    code = ("from banger.daemon.main import _load_handlers; _load_handlers(test_methods=False); "
            "from banger.daemon.registry import METHODS; print(' '.join(sorted(METHODS)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == sorted(CONTRACT)


def test_handlers_take_and_return_what_the_contract_says() -> None:
    _load_handlers(test_methods=True)
    assert set(METHODS) == set(CONTRACT) | set(TEST_METHODS)
    for name, entry in METHODS.items():
        spec = CONTRACT.get(name) or TEST_METHODS[name]
        assert entry.method is spec
        hints = typing.get_type_hints(entry.handler)
        assert entry.handler.__annotations__["return"] == spec.result, name
        *_, params = [v for k, v in hints.items() if k != "return"]
        assert params is spec.params, name
        assert hints["return"] is not None


async def returns_str(ctx: Any, p: NoParams) -> str:
    return ""


def test_a_handler_outside_the_contract_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"vm\.frobnicate is not in the contract"):
        method(Method("vm.frobnicate", NoParams, "str", "no such method"))(returns_str)
    lookalike = Method("ping", NoParams, "str", "the name of a contract method, not the method")
    with pytest.raises(RuntimeError, match="ping is not in the contract"):
        check_handler(lookalike, returns_str)


def test_a_handler_returning_other_than_the_contract_is_refused() -> None:
    with pytest.raises(RuntimeError, match="returns 'str'; the contract says 'Pong'"):
        check_handler(system.PING, returns_str)


def cli_calls() -> set[str]:
    """Contract methods the CLI names (by their constants, the only way it can call one)."""
    constants = {k: v for area in AREAS for k, v in vars(area).items() if isinstance(v, Method)}
    names: set[str] = set()
    for path in CLI_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.name)
    return {constants[n].name for n in names & set(constants)}


def test_the_cli_calls_every_method_not_marked_api_only() -> None:
    called = cli_calls()
    assert called <= set(CONTRACT)  # never a test-only method
    for m in CONTRACT.values():
        assert (m.name in called) != bool(m.api_only), (m.name, m.api_only)


def test_the_cli_sends_no_method_by_its_name_string() -> None:
    quoted = {f'"{name}"' for name in CONTRACT} | {f"'{name}'" for name in CONTRACT}
    for path in CLI_SOURCES:
        text = path.read_text()
        assert not [q for q in quoted if q in text], path


def test_a_call_with_another_methods_params_is_refused_before_connecting(tmp_path: Path) -> None:
    from banger.paths import resolve_paths

    client = Client(resolve_paths({"BANGER_HOME": str(tmp_path)}), autostart=False)
    with pytest.raises(TypeError, match=r"vm\.list takes VmListParams, not NoParams"):
        client.start(vm.VM_LIST, NoParams())  # type: ignore[misc]  # mypy refuses it too


if __name__ == "__main__":
    print(f"## Methods\n\n{render(CONTRACT)}\n\n## Test-only methods\n\n{render(TEST_METHODS)}")
