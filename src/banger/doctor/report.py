"""Check results and the runner that collects them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from banger.config import Config, load_config
from banger.errors import BangerError
from banger.paths import Paths

Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


CheckFn = Callable[[Paths, Config], Iterable[Check]]


def run_checks(paths: Paths) -> list[Check]:
    from banger.doctor import host_checks, state_checks

    try:
        config = load_config(paths)
        results = [Check("config", "PASS", f"{paths.config_file}" +
                         ("" if config.exists else " (absent: all defaults)"))]
    except BangerError as exc:
        return [Check("config", "FAIL", exc.message, "fix the key named above in config.toml")]
    for fn in (*host_checks.CHECKS, *state_checks.CHECKS):
        try:
            results.extend(fn(paths, config))
        except Exception as exc:  # a broken check must not hide the others
            results.append(Check(fn.__name__, "FAIL", f"check crashed: {exc}"))
    return results
