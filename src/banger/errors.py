"""The one error family: every failure maps to an RPC error code and a CLI exit code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_VERSION = "bad_version"
    UNKNOWN_METHOD = "unknown_method"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    NOT_RUNNING = "not_running"
    OPERATION_FAILED = "operation_failed"
    CANCELLED = "cancelled"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class BangerError(Exception):
    """Base error: a one-line message saying what is wrong and what to do."""

    code: ErrorCode = ErrorCode.OPERATION_FAILED
    exit_code: int = 1

    def __init__(self, message: str, *, op_id: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.op_id = op_id
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.op_id})" if self.op_id else self.message

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.op_id:
            wire["op_id"] = self.op_id
        if self.details:
            wire["details"] = self.details
        return wire

    @staticmethod
    def from_wire(data: dict[str, Any]) -> BangerError:
        try:
            code = ErrorCode(data.get("code", "internal"))
        except ValueError:
            code = ErrorCode.INTERNAL
        cls = _BY_CODE.get(code, BangerError)
        err = cls(str(data.get("message", "unknown error")), op_id=data.get("op_id"))
        err.details = dict(data.get("details") or {})
        return err


class BadVersion(BangerError):
    code = ErrorCode.BAD_VERSION


class UnknownMethod(BangerError):
    code = ErrorCode.UNKNOWN_METHOD


class InvalidArgument(BangerError):
    code = ErrorCode.INVALID_ARGUMENT


class ConfigError(InvalidArgument):
    """A config file is wrong; the message names the file and the key."""


class NotFound(BangerError):
    code = ErrorCode.NOT_FOUND


class Conflict(BangerError):
    code = ErrorCode.CONFLICT


class NotRunning(BangerError):
    code = ErrorCode.NOT_RUNNING


class OperationFailed(BangerError):
    code = ErrorCode.OPERATION_FAILED


class Cancelled(BangerError):
    code = ErrorCode.CANCELLED


class Unavailable(BangerError):
    """The daemon (or another local service) cannot be reached."""

    code = ErrorCode.UNAVAILABLE


class InternalError(BangerError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[BangerError]] = {
    ErrorCode.BAD_VERSION: BadVersion,
    ErrorCode.UNKNOWN_METHOD: UnknownMethod,
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.NOT_RUNNING: NotRunning,
    ErrorCode.OPERATION_FAILED: OperationFailed,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.INTERNAL: InternalError,
}
