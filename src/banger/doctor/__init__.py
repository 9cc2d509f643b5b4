"""`banger doctor`: host checks that work without the daemon."""

from banger.doctor.check import Check
from banger.doctor.report import run_checks

__all__ = ["Check", "run_checks"]
