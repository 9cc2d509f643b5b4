"""`banger doctor`: host checks that work without the daemon."""

from banger.doctor.report import Check, run_checks

__all__ = ["Check", "run_checks"]
