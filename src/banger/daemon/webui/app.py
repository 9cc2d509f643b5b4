"""The Starlette app: routes, templates, static files, live VM rows over server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from banger.daemon.state import Daemon
from banger.daemon.webui.actions import ACTIONS, run_action
from banger.daemon.webui.auth import COOKIE, SESSION_IDLE, Auth
from banger.daemon.webui.guard import Guard
from banger.daemon.webui.manage import Manage
from banger.daemon.webui.render import ASSET_FILES, ASSETS, HERE, Renderer
from banger.errors import BangerError
from banger.vms.model import VmRecord

ASYNC_HEADER = "x-banger-in-page"
POLL_S = 0.5  # how often /events looks at the VM table
KEEPALIVE_S = 15.0
STATUS = {"not_found": 404, "conflict": 409, "not_running": 409, "invalid_argument": 400}


class Pages(Renderer):
    def __init__(self, daemon: Daemon, auth: Auth, closing: asyncio.Event) -> None:
        super().__init__(daemon, closing)
        self.auth = auth
        self.manage = Manage(self)

    def login_page(self, message: str = "") -> bytes:
        return self.env.get_template("login.html").render(csrf="", htmx=False,
                                                          message=message).encode()

    async def login(self, request: Request) -> Response:
        session = self.auth.redeem(request.query_params.get("token", ""))
        if session is None:
            return HTMLResponse(self.login_page("This login link was used already or has "
                                                "expired."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session.id, max_age=int(SESSION_IDLE), path="/",
                            httponly=True, samesite="strict")
        return response

    async def dashboard(self, request: Request) -> Response:
        return self.render("dashboard.html", request, page="dashboard",
                           **await self.views.dashboard())

    async def vm_list(self, request: Request) -> Response:
        return self.render("vms.html", request, page="vms", vms=self.views.vms())

    async def vm_detail(self, request: Request) -> Response:
        vm = self.views.find(request.path_params["name"])
        if vm is None:
            return self.render("missing.html", request, 404, page="vms",
                               name=request.path_params["name"])
        return await self.vm_page(request, vm)

    async def vm_page(self, request: Request, vm: VmRecord, status: int = 200,
                      error: str | None = None) -> Response:
        host = request.headers["host"]
        sessions, listening = await asyncio.gather(self.views.sessions(vm),
                                                   self.views.listening(vm, host))
        return self.render("vm.html", request, status, page="vms", error=error,
                           sessions=sessions, listening=listening,
                           **self.views.detail(vm, host))

    async def vm_ports(self, request: Request) -> Response:
        """The VM page's ports, refreshed in place: published ones and what listens in the guest."""
        vm = self.views.find(request.path_params["name"])
        if vm is None:
            return HTMLResponse("")
        host = request.headers["host"]
        html = self.env.get_template("_vm_ports.html").render(
            vm=vm, ports=self.views.published(vm, host),
            listening=await self.views.listening(vm, host))
        return HTMLResponse(html)

    async def vm_console(self, request: Request) -> Response:
        vm = self.views.find(request.path_params["name"])
        text = self.views.console(vm) if vm else ""
        return HTMLResponse(self.env.from_string("{{ text }}").render(text=text))

    def _target(self, request: Request) -> tuple[VmRecord, str] | Response:
        """The VM and the button an action URL names, or the page saying there is none."""
        vm = self.views.find(request.path_params["name"])
        action = request.path_params["action"]
        if vm is None or action not in ACTIONS:
            return self.render("missing.html", request, 404, page="vms",
                               name=request.path_params["name"])
        return vm, action

    async def confirm(self, request: Request) -> Response:
        target = self._target(request)
        if isinstance(target, Response):
            return target
        vm, action = target
        return self.render("confirm.html", request, page="vms", vm=vm, action=action,
                           error=None)

    async def act(self, request: Request) -> Response:
        target = self._target(request)
        if isinstance(target, Response):
            return target
        vm, action = target
        form = await request.form()
        if ACTIONS[action][1] and form.get("confirm") != "yes":
            return self.render("confirm.html", request, 400, page="vms", vm=vm, action=action,
                               error="Tick the box to confirm.")
        in_page = request.headers.get(ASYNC_HEADER) == "1"  # app.js: the page stays, SSE updates it
        try:
            await run_action(self.daemon, action, vm)
        except BangerError as exc:
            status = STATUS.get(str(exc.code), 500)
            if in_page:
                return PlainTextResponse(str(exc), status_code=status)
            current = self.views.find(vm.name)
            if current is None:
                return self.render("missing.html", request, 404, page="vms", name=vm.name)
            return await self.vm_page(request, current, status, str(exc))
        if in_page:
            return Response(status_code=204)
        return RedirectResponse("/vms" if action == "delete" else f"/vms/{vm.name}",
                                status_code=303)

    async def events(self, request: Request) -> Response:
        """Server-sent events: the VM table's rows (and one VM's state) whenever they change."""
        name = request.query_params.get("vm")
        cookie = request.cookies.get(COOKIE)
        session = self.auth.session(cookie)
        csrf = session.csrf if session else ""
        rows = self.env.get_template("_vm_rows.html")
        state = self.env.get_template("_vm_state.html")
        buttons = self.env.get_template("_vm_actions.html")

        async def stream() -> AsyncIterator[str]:
            sent: dict[str, str] = {}
            idle = 0.0
            while not self.closing.is_set() and self.auth.session(cookie) is not None:
                vms = self.views.vms()
                frames = {"rows": rows.render(vms=vms)}
                if name:
                    vm = next((v for v in vms if v.name == name), None)
                    frames["state"] = state.render(vm=vm)
                    frames["actions"] = buttons.render(vm=vm, csrf=csrf,
                                                       saved=vm is not None and self.views.saved(vm))
                changed = {k: v for k, v in frames.items() if sent.get(k) != v}
                for event, html in changed.items():
                    yield _sse(event, html)
                sent.update(changed)
                idle = 0.0 if changed else idle + POLL_S
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield ": keepalive\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


def asset(request: Request) -> Response:
    rel = ASSET_FILES.get(request.path_params["file"])
    if rel is None or not (ASSETS / rel).is_file():
        return Response("not installed: run `make install` (needs npm)", status_code=404,
                        media_type="text/plain")
    return FileResponse(ASSETS / rel)


def build_app(daemon: Daemon, auth: Auth, hosts: frozenset[str],
              closing: asyncio.Event | None = None) -> Guard:
    pages = Pages(daemon, auth, closing or asyncio.Event())
    app = Starlette(routes=[
        Route("/", pages.dashboard),
        Route("/login", pages.login),
        Route("/vms", pages.vm_list),
        Route("/events", pages.events),
        Route("/vms/{name}", pages.vm_detail),
        Route("/vms/{name}/console", pages.vm_console),
        Route("/vms/{name}/ports", pages.vm_ports),
        Route("/vms/{name}/confirm/{action}", pages.confirm),
        Route("/vms/{name}/{action}", pages.act, methods=["POST"]),
        *pages.manage.routes(),
        Route("/assets/{file}", asset),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ])
    return Guard(app, auth, hosts, pages.login_page)
