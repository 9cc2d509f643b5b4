"""A fake firecracker process for the backend's snapshot tests: not a VM, a contract.

`python fc_fake.py --api-sock S --id I` serves Firecracker's API on S (fc_contract.ApiPeer) and
behaves like Firecracker where banger depends on it:
- every request is validated against firecracker-api.yaml (a violation is a 400);
- the documented order: boot config only before InstanceStart; /snapshot/load only on a fresh
  process (after nothing but logger and metrics); PATCH /vm and /snapshot/create only after
  boot or load, create only when paused; a failed load ends the process;
- files resolve like Firecracker's: relative paths against its cwd; the device state it writes
  records the drive and vsock paths as it was given them, and a load reopens those (the vsock
  path can be overridden, the tap with network_overrides).
What it did is appended, one JSON object a line, to `fake-firecracker.jsonl` in its cwd.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.unit.fc_contract import (
    ApiPeer,
    Request,
    RequestValidator,
    SpecViolation,
    load_spec,
)

MIB = 1024 * 1024
RECORD = "fake-firecracker.jsonl"
BOOT_CONFIG = ("/machine-config", "/boot-source", "/drives/", "/network-interfaces/", "/vsock")


class Refused(Exception):
    pass


class FakeFirecracker:
    def __init__(self, validator: RequestValidator) -> None:
        self.validator = validator
        self.state = "fresh"  # fresh -> configured -> running <-> paused; fresh -> paused (load)
        self.config: dict[str, Any] = {}
        self.exit_code: int | None = None
        self._listeners: list[socket.socket] = []

    def handle(self, req: Request) -> tuple[int, str]:
        try:
            self.validator.validate(req)
            self._apply(req)
        except (SpecViolation, Refused, OSError, ValueError) as exc:
            record({"refused": [req.method, req.path], "fault": str(exc)})
            if req.path == "/snapshot/load":
                self.exit_code = 1  # Firecracker ends itself after a failed load
            return 400, str(exc)
        record({"request": [req.method, req.path], "body": req.body})
        return 204, ""

    def _apply(self, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        if req.path in ("/logger", "/metrics"):
            self._need({"fresh", "configured"}, req)
            for key in ("log_path", "metrics_path"):
                if key in body and not Path(body[key]).exists():
                    raise Refused(f"cannot open {body[key]}")
        elif req.method == "PUT" and req.path.startswith(BOOT_CONFIG):
            self._need({"fresh", "configured"}, req)
            self.state = "configured"
            self.config[req.path] = body
        elif req.path == "/actions" and body.get("action_type") == "InstanceStart":
            self._need({"configured"}, req)
            self._open_devices(self._drive(), self.config["/vsock"]["uds_path"])
            self.state = "running"
        elif req.path == "/snapshot/load":
            self._need({"fresh"}, req)
            self._load(body)
        elif req.path == "/vm":
            self._need({"running", "paused"}, req)
            self.state = "paused" if body["state"] == "Paused" else "running"
        elif req.path == "/snapshot/create":
            self._need({"paused"}, req)
            self._create(body)
        elif req.method == "PATCH" and req.path.startswith("/drives/"):
            self._need({"running", "paused"}, req)
            path = Path(body["path_on_host"])
            record({"rescanned": str(path.resolve()), "size": path.stat().st_size})
        elif req.path == "/actions":
            self._need({"running"}, req)

    def _need(self, states: set[str], req: Request) -> None:
        if self.state not in states:
            raise Refused(f"{req.method} {req.path} is not allowed while {self.state}")

    def _drive(self) -> str:
        return str(next(v for k, v in self.config.items() if k.startswith("/drives/"))
                   ["path_on_host"])

    def _open_devices(self, drive: str, uds_path: str) -> None:
        with open(drive, "r+b"):  # relative to the cwd, as Firecracker opens it
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(uds_path)  # fails like Firecracker's when a stale socket is there
        listener.listen()
        self._listeners.append(listener)
        record({"opened_drive": str(Path(drive).resolve()),
                "vsock": str(Path(uds_path).resolve())})

    def _create(self, body: dict[str, Any]) -> None:
        machine = self.config["/machine-config"]
        with open(body["mem_file_path"], "wb") as mem:
            mem.truncate(machine["mem_size_mib"] * MIB)
        tap = self.config.get("/network-interfaces/eth0", {}).get("host_dev_name")
        state = {"drive": self._drive(), "vsock": self.config["/vsock"]["uds_path"], "tap": tap,
                 "mem_size_mib": machine["mem_size_mib"]}
        Path(body["snapshot_path"]).write_text(json.dumps(state))

    def _load(self, body: dict[str, Any]) -> None:
        state = json.loads(Path(body["snapshot_path"]).read_text())
        memory = Path(body["mem_backend"]["backend_path"])
        if memory.stat().st_size < state["mem_size_mib"] * MIB:
            raise Refused(f"memory file {memory} is smaller than the guest memory")
        overrides = {o["iface_id"]: o["host_dev_name"] for o in body.get("network_overrides", [])}
        vsock = body.get("vsock_override", {}).get("uds_path", state["vsock"])
        self._open_devices(state["drive"], vsock)
        record({"loaded": str(Path(body["snapshot_path"]).resolve()),
                "tap": overrides.get("eth0", state["tap"])})
        self.config = {"/machine-config": {"mem_size_mib": state["mem_size_mib"]},
                       "/drives/rootfs": {"path_on_host": state["drive"]},
                       "/vsock": {"uds_path": vsock}}
        if state["tap"]:
            self.config["/network-interfaces/eth0"] = {"host_dev_name": overrides.get(
                "eth0", state["tap"])}
        self.state = "running" if body.get("resume_vm") else "paused"


def record(event: dict[str, Any]) -> None:
    with open(RECORD, "a") as f:
        f.write(json.dumps({**event, "cwd": os.getcwd()}) + "\n")


async def serve(api_sock: str) -> int:
    fake = FakeFirecracker(RequestValidator(load_spec()))
    async with ApiPeer(Path(api_sock), handler=fake.handle):
        while fake.exit_code is None:
            await asyncio.sleep(0.01)
    return fake.exit_code


def main(argv: list[str]) -> int:
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    return asyncio.run(serve(args["--api-sock"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
