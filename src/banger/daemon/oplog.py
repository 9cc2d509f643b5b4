"""Logging with the op id on every line, carried by a contextvar through async calls."""

from __future__ import annotations

import contextvars
import logging
from pathlib import Path

current_op: contextvars.ContextVar[str] = contextvars.ContextVar("current_op", default="-")


class OpIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.op_id = current_op.get()
        return True


def setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    )
    handler.addFilter(OpIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(op_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
