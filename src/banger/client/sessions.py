"""Guest-owned sessions (docs/sessions.md), typed."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from banger.client.base import BaseClient

if TYPE_CHECKING:
    from banger.rpc.methods.session import SessionRow


class SessionApi(BaseClient):
    def session_start(self, vm: str, argv: list[str], *, name: str | None = None,
                      cwd: str | None = None, env: dict[str, str] | None = None,
                      tty: bool = False, log_cap: int | None = None) -> SessionRow:
        from banger.rpc.methods.session import SESSION_START, SessionRow, SessionStartParams

        params = SessionStartParams(vm, argv, name, cwd, env or {}, tty, log_cap=log_cap)
        return self.call_as(SESSION_START, params, SessionRow)

    def session_list(self, vm: str | None = None) -> list[SessionRow]:
        """Sessions of one VM, or of every running VM."""
        from banger.rpc.methods.session import SESSION_LIST, SessionListParams, SessionRow

        return self.call_as(SESSION_LIST, SessionListParams(vm), list[SessionRow])

    def session_show(self, vm: str, name: str) -> SessionRow:
        from banger.rpc.methods.session import SESSION_SHOW, SessionRef, SessionRow

        return self.call_as(SESSION_SHOW, SessionRef(vm, name), SessionRow)

    def session_logs(self, vm: str, name: str, *, tail: int | None = None,
                     limit: int = 1024 * 1024) -> tuple[bytes, int]:
        """The session's kept output (its last `limit` bytes) and how many earlier bytes were
        left out (by `limit`; the guest's own log cap may have dropped more: see log_start)."""
        from banger.rpc.methods.session import SESSION_LOGS, SessionLogsParams

        kept, dropped = bytearray(), 0
        call = self.start(SESSION_LOGS, SessionLogsParams(vm, name, False, tail))
        try:
            for event in call.events():
                if event.get("type") == "data":
                    kept += event["data"]
                    if len(kept) > limit:  # keep the newest bytes, like `tail`
                        dropped += len(kept) - limit
                        del kept[:len(kept) - limit]
        finally:
            self.finish(call)
        return bytes(kept), dropped

    def session_send(self, vm: str, name: str, data: bytes, *, eof: bool = False) -> int:
        """Write data to the session's stdin (eof=True closes it after); returns bytes sent."""
        from banger.rpc.methods.session import SESSION_SEND, SessionSendParams

        call = self.start(SESSION_SEND, SessionSendParams(vm, name, eof=eof))
        try:
            with contextlib.suppress(OSError):  # a refusal arrives as the error below
                call.send_data(data)
                call.send({"type": "stdin_eof"})
            for _ in call.events():
                pass
            return int((call.result or {}).get("bytes", 0))
        finally:
            self.finish(call)

    def session_stop(self, vm: str, name: str, *, grace: float = 10.0) -> SessionRow:
        from banger.rpc.methods.session import SESSION_STOP, SessionRow, SessionStopParams

        return self.call_as(SESSION_STOP, SessionStopParams(vm, name, grace), SessionRow)

    def session_kill(self, vm: str, name: str) -> SessionRow:
        from banger.rpc.methods.session import SESSION_KILL, SessionRef, SessionRow

        return self.call_as(SESSION_KILL, SessionRef(vm, name), SessionRow)

    def session_rm(self, vm: str, name: str, *, force: bool = False) -> SessionRow:
        from banger.rpc.methods.session import SESSION_RM, SessionRmParams, SessionRow

        return self.call_as(SESSION_RM, SessionRmParams(vm, name, force), SessionRow)
