"""Firecracker's OpenAPI (Swagger 2.0) spec as a request validator, and a Unix-socket HTTP peer.

The peer stands in for the firecracker process, which cannot run on these machines (no binary,
PVM KVM): it records every request the backend sends and answers like Firecracker does.
tests/unit/fc_fake.py runs the peer as a whole fake firecracker process.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parents[1] / "contracts" / "firecracker-api.yaml"  # README there


def _stringify_keys(node: Any) -> Any:
    """YAML reads response codes (200:) as ints; the spec validator wants strings."""
    if isinstance(node, dict):
        return {str(k): _stringify_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_stringify_keys(v) for v in node]
    return node


def _strict(node: Any) -> Any:
    """Firecracker's API structs reject unknown fields (serde deny_unknown_fields): say so."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
    elif isinstance(node, list):
        node = [_strict(v) for v in node]
    return node


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _stringify_keys(yaml.safe_load(SPEC_PATH.read_text()))
    validate_spec(spec)  # the spec itself is valid Swagger 2.0
    return spec


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class SpecViolation(AssertionError):
    pass


class RequestValidator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        strict = _strict(copy.deepcopy(spec))
        self.registry: Registry[Any] = Registry().with_resource(
            "urn:firecracker", Resource.from_contents(strict, default_specification=DRAFT4))
        self.strict = strict

    def _operation(self, method: str, path: str) -> tuple[dict[str, Any], dict[str, str]]:
        for template, item in self.spec["paths"].items():
            names = re.findall(r"{(\w+)}", template)
            pattern = "^" + re.sub(r"{\w+}", "([^/]+)", template) + "$"
            m = re.match(pattern, path)
            if m and method.lower() in item:
                return item[method.lower()], dict(zip(names, m.groups(), strict=True))
        raise SpecViolation(f"{method} {path}: no such operation in firecracker-api.yaml")

    def validate(self, req: Request) -> None:
        op, path_params = self._operation(req.method, req.path)
        for param in op.get("parameters", []):
            if param["in"] == "path" and param.get("required") and param["name"] not in path_params:
                raise SpecViolation(f"{req.path}: missing path parameter {param['name']}")
            if param["in"] != "body":
                continue
            if req.body is None:
                if param.get("required"):
                    raise SpecViolation(f"{req.method} {req.path}: body required")
                continue
            if req.headers.get("content-type") != "application/json":
                raise SpecViolation(f"{req.path}: content-type {req.headers.get('content-type')}")
            schema = {"$ref": "urn:firecracker" + param["schema"]["$ref"]}
            validator = jsonschema.Draft4Validator(schema, registry=self.registry)
            errors = sorted(validator.iter_errors(req.body), key=lambda e: list(e.path))
            if errors:
                raise SpecViolation(f"{req.method} {req.path}: {errors[0].message}")
        # Firecracker checks that the id in the URL matches the id in the body.
        for name, value in path_params.items():
            key = {"drive_id": "drive_id", "iface_id": "iface_id"}.get(name)
            if key and isinstance(req.body, dict) and req.body.get(key) != value:
                raise SpecViolation(f"{req.path}: body {key} {req.body.get(key)!r} != {value!r}")


Handler = Callable[[Request], tuple[int, str]]  # -> (HTTP status, fault message)


@dataclass
class ApiPeer:
    """A Unix-socket HTTP/1.1 server answering 204 (or a canned fault, or what handler says)."""

    socket_path: Path
    requests: list[Request] = field(default_factory=list)
    fault: tuple[int, str] | None = None
    handler: Handler | None = None
    _server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ApiPeer:
        self._server = await asyncio.start_unix_server(self._serve, str(self.socket_path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := (await reader.readline()).decode().strip()):
                    name, _, value = h.partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else None
                request = Request(method, target, headers, body)
                self.requests.append(request)
                fault = self.handler(request) if self.handler else self.fault or (204, "")
                writer.write(self._answer(fault).encode())
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, fault: tuple[int, str]) -> str:
        code, message = fault
        if code < 300:
            return "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        payload = json.dumps({"fault_message": message})
        return (f"HTTP/1.1 {code} Bad Request\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n{payload}")

