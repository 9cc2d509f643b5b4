"""Async client for Firecracker's REST API over its Unix socket."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from banger.errors import OperationFailed

API_TIMEOUT = 10.0


@dataclass(frozen=True)
class ApiCall:
    """One request of the boot sequence: easy to log, to record and to check against the spec."""

    method: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)


class FirecrackerApi:
    def __init__(self, socket_path: str, timeout: float = API_TIMEOUT) -> None:
        self.socket_path = socket_path
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://localhost", timeout=timeout)

    async def __aenter__(self) -> FirecrackerApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def call(self, call: ApiCall) -> Any:
        try:
            response = await self._client.request(
                call.method, call.path,
                content=json.dumps(call.body) if call.method != "GET" else None,
                headers={"Content-Type": "application/json", "Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OperationFailed(f"firecracker API {call.method} {call.path} failed: "
                                  f"{exc or type(exc).__name__}") from None
        if response.status_code >= 300:
            raise OperationFailed(f"firecracker refused {call.method} {call.path} "
                                  f"({response.status_code}): {_fault(response)}")
        return response.json() if response.content else None

    async def put(self, path: str, body: dict[str, Any]) -> None:
        await self.call(ApiCall("PUT", path, body))

    async def get(self, path: str) -> Any:
        return await self.call(ApiCall("GET", path))

    async def action(self, action_type: str) -> None:
        await self.put("/actions", {"action_type": action_type})


def _fault(response: httpx.Response) -> str:
    """Firecracker explains a refusal in `fault_message`."""
    try:
        return str(response.json().get("fault_message") or response.text).strip()
    except ValueError:
        return response.text.strip() or "(no message)"
