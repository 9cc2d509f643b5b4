"""The runner that collects every check's results."""

from __future__ import annotations

from banger.config import load_config
from banger.doctor import dns_checks, host_checks, rootless_checks, state_checks
from banger.doctor.check import Check
from banger.errors import BangerError
from banger.paths import Paths


def run_checks(paths: Paths) -> list[Check]:
    try:
        config = load_config(paths)
        results = [Check("config", "PASS", f"{paths.config_file}" +
                         ("" if config.exists else " (absent: all defaults)"))]
    except BangerError as exc:
        return [Check("config", "FAIL", exc.message, "fix the key named above in config.toml")]
    for fn in (*host_checks.CHECKS, *rootless_checks.CHECKS, *state_checks.CHECKS,
               *dns_checks.CHECKS):
        try:
            results.extend(fn(paths, config))
        except Exception as exc:  # a broken check must not hide the others
            results.append(Check(fn.__name__, "FAIL", f"check crashed: {exc}"))
    return results
