#!/usr/bin/env python3
"""Web UI: server response time of the dashboard and of the VM list with 50 VM records, and
Chromium's first contentful paint of both, against an in-run baseline (a static file request;
the login page's paint). A fake-backend daemon (tests/fakes) holds the 50 records; the UI app
is the real one, served by uvicorn on loopback as bangerd serves it.

Prints one JSON object. `--no-browser` skips Chromium (no /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from tests.fakes.daemon import FakeDaemon  # noqa: E402

from banger.daemon.state import Daemon  # noqa: E402
from banger.daemon.webui.app import build_app  # noqa: E402
from banger.daemon.webui.auth import COOKIE, Auth, allowed_hosts  # noqa: E402
from banger.store.db import utcnow  # noqa: E402
from banger.vms.model import VmRecord, VmState  # noqa: E402

VMS = 50
CHROMIUM = Path("/usr/bin/chromium")
STATES = [VmState.RUNNING, VmState.STOPPED, VmState.STOPPED, VmState.ERROR]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(daemon: FakeDaemon) -> None:
    for i in range(VMS):
        daemon.vms.repo.insert(VmRecord(
            id=f"bench{i:04d}", name=f"bench-{i:02d}", state=STATES[i % len(STATES)],
            image="fake-image", kernel="fake-kernel", vcpu=1 + i % 4, memory_mib=512,
            disk_mib=4096, created_at=utcnow(), updated_at=utcnow(), net_mode="user",
            ip=f"10.0.2.{15 + i}", publish=[f"{20000 + i}:80"]))


def serve(app: Any, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
                            access_log=False)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


def timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code in (200, 401), (path, response.status_code)
    return samples


def paints(base: str, cookie: str, runs: int) -> dict[str, float]:
    """Median first contentful paint (ms) of each page in a fresh Chromium page."""
    from playwright.sync_api import sync_playwright

    found: dict[str, list[float]] = {"login": [], "dashboard": [], "vms": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context()
        context.add_cookies([{"name": COOKIE, "value": cookie, "url": base}])
        anonymous = browser.new_context()
        for _ in range(runs):
            for name, ctx, path in (("login", anonymous, "/"), ("dashboard", context, "/"),
                                    ("vms", context, "/vms")):
                page = ctx.new_page()
                page.goto(base + path, wait_until="load")
                fcp = page.evaluate(
                    "() => new Promise(done => { const get = () => { const e = performance"
                    ".getEntriesByName('first-contentful-paint')[0]; e ? done(e.startTime) : "
                    "setTimeout(get, 10); }; get(); })")
                found[name].append(float(fcp))
                page.close()
        browser.close()
    return {name: round(statistics.median(values), 1) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--paint-runs", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bh-webui-", dir="/tmp") as home:
        fake = FakeDaemon(Path(home))
        fill(fake)
        daemon = Daemon(fake.paths, fake.vms.config, fake.store, fake.vms.artifacts, fake.vms)
        port = free_port()
        auth = Auth()
        closing = asyncio.Event()
        server = serve(build_app(daemon, auth, allowed_hosts("127.0.0.1", port), closing), port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base) as client:
                login = client.get("/login", params={"token": auth.new_token()})
                assert login.status_code == 303
                cookie = client.cookies[COOKIE]
                timed(client, "/", 5)  # warm: templates compiled, /proc sampled once
                static = timed(client, "/static/app.css", args.runs)
                dashboard = timed(client, "/", args.runs)
                vms = timed(client, "/vms", args.runs)
                assert client.get("/vms").text.count('<tr data-vm="') == VMS
            result: dict[str, Any] = {
                "benchmark": "webui",
                "vm_records": VMS,
                "runs": args.runs,
                "baseline_static_file_ms": round(statistics.median(static), 2),
                "dashboard_ms": round(statistics.median(dashboard), 2),
                "vm_list_ms": round(statistics.median(vms), 2),
                "dashboard_p90_ms": round(sorted(dashboard)[int(len(dashboard) * 0.9) - 1], 2),
                "vm_list_p90_ms": round(sorted(vms)[int(len(vms) * 0.9) - 1], 2),
                "dashboard_ratio": round(statistics.median(dashboard) / statistics.median(static), 2),
                "vm_list_ratio": round(statistics.median(vms) / statistics.median(static), 2),
            }
            if not args.no_browser and CHROMIUM.exists():
                fcp = paints(base, cookie, args.paint_runs)
                result.update({
                    "paint_runs": args.paint_runs,
                    "baseline_login_fcp_ms": fcp["login"],
                    "dashboard_fcp_ms": fcp["dashboard"],
                    "vm_list_fcp_ms": fcp["vms"],
                    "dashboard_fcp_ratio": round(fcp["dashboard"] / fcp["login"], 2),
                    "vm_list_fcp_ratio": round(fcp["vms"] / fcp["login"], 2),
                })
        finally:
            closing.set()
            server.should_exit = True
            fake.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
