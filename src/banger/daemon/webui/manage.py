"""Pages that start work: the create form, images and kernels (pull, delete), templates, the
operations list and one operation's live progress with its cancel button, and the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from banger.daemon.operations_repo import OperationRepo
from banger.daemon.webui import forms
from banger.daemon.webui.guard import CSP
from banger.daemon.webui.jobs import Job, Jobs
from banger.daemon.webui.render import Renderer
from banger.daemon.webui.terminal import serve_terminal
from banger.errors import BangerError
from banger.images import catalog as image_catalog
from banger.images.manifest import list_images
from banger.kernels import catalog as kernel_catalog
from banger.kernels.manifest import list_kernels

HISTORY_ROWS = 100
PROGRESS_POLL_S = 0.25
KINDS = ("image", "kernel")


class Manage:
    def __init__(self, pages: Renderer) -> None:
        self.pages = pages
        self.daemon = pages.daemon
        self.jobs = Jobs(pages.daemon)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/create", self.create_form),
            Route("/create", self.create, methods=["POST"]),
            Route("/images", self.images),
            Route("/images/pull", self.pull, methods=["POST"]),
            Route("/artifacts/{kind}/{name}/delete", self.confirm_delete),
            Route("/artifacts/{kind}/{name}/delete", self.delete, methods=["POST"]),
            Route("/ops", self.operations),
            Route("/ops/{op_id}", self.operation),
            Route("/ops/{op_id}/events", self.operation_events),
            Route("/ops/{op_id}/cancel", self.cancel, methods=["POST"]),
            Route("/vms/{name}/terminal", self.terminal),
            WebSocketRoute("/vms/{name}/terminal/ws", self.terminal_ws),
        ]

    # ---- create

    def _image_choices(self) -> list[str]:
        local = [m.name for m in list_images(self.daemon.paths)]
        return local + [n for n in image_catalog.load_catalog().names() if n not in local]

    async def create_form(self, request: Request, error: str | None = None,
                          values: dict[str, str] | None = None, status: int = 200) -> Response:
        config = self.daemon.config
        defaults = {"image": config.default_image, "vcpu": "", "memory": "", "name": "",
                    "net": config.network_mode, "repo": "", "allow": ""}
        return self.pages.render("create.html", request, status, page="create", error=error,
                                 images=await asyncio.to_thread(self._image_choices),
                                 nets=forms.NET_MODES, values={**defaults, **(values or {})})

    async def create(self, request: Request) -> Response:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            parsed = forms.parse_create(form, await asyncio.to_thread(self._image_choices))
            if parsed.repo:
                await forms.check_repo(parsed.repo)
        except BangerError as exc:
            return await self.create_form(request, exc.message, values, 400)
        title = f"create VM {parsed.request.name or ''}".rstrip()
        job = self.jobs.start("vm.create", title, forms.create_work(parsed))
        return RedirectResponse(f"/ops/{job.op_id}", status_code=303)

    # ---- images, kernels, templates

    async def images(self, request: Request, error: str | None = None,
                     status: int = 200) -> Response:
        paths = self.daemon.paths
        images = await asyncio.to_thread(list_images, paths)
        kernels = await asyncio.to_thread(list_kernels, paths)
        return self.pages.render(
            "images.html", request, status, page="images", error=error, images=images,
            kernels=kernels, templates=self.daemon.vms.templates.list(),
            image_names=image_catalog.load_catalog().names(),
            kernel_names=[k.name for k in kernel_catalog.load_catalog().kernels])

    async def pull(self, request: Request) -> Response:
        form = await request.form()
        kind = "kernel" if form.get("kind") == "kernel" else "image"
        try:
            source = forms.parse_source(form)
        except BangerError as exc:
            return await self.images(request, exc.message, 400)
        job = self.jobs.start(f"{kind}.pull", f"pull {kind} {source}",
                              forms.pull_work(kind, source))
        return RedirectResponse(f"/ops/{job.op_id}", status_code=303)

    async def confirm_delete(self, request: Request) -> Response:
        kind, name = request.path_params["kind"], request.path_params["name"]
        if kind not in KINDS:
            return self.pages.render("missing.html", request, 404, page="images", name=kind)
        return self.pages.render("confirm_delete.html", request, page="images", kind=kind,
                                 name=name, error=None)

    async def delete(self, request: Request) -> Response:
        kind, name = request.path_params["kind"], request.path_params["name"]
        if kind not in KINDS:
            return self.pages.render("missing.html", request, 404, page="images", name=kind)
        form = await request.form()
        if form.get("confirm") != "yes":
            return self.pages.render("confirm_delete.html", request, 400, page="images",
                                     kind=kind, name=name, error="Tick the box to confirm.")
        job = self.jobs.start(f"{kind}.delete", f"delete {kind} {name}",
                              forms.delete_work(kind, name))
        assert job.task is not None
        await asyncio.wait({job.task}, timeout=10)  # a delete is quick: show its outcome
        if job.state == "done":
            return RedirectResponse("/images", status_code=303)
        return RedirectResponse(f"/ops/{job.op_id}", status_code=303)

    # ---- operations

    async def operations(self, request: Request) -> Response:
        rows = OperationRepo(self.daemon.store).recent(HISTORY_ROWS)
        return self.pages.render("ops.html", request, page="ops", rows=rows,
                                 jobs=self.jobs.jobs, running=set(self.daemon.running))

    def _job(self, request: Request) -> Job | None:
        return self.jobs.get(request.path_params["op_id"])

    async def operation(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self.pages.render("missing.html", request, 404, page="ops",
                                     name=request.path_params["op_id"])
        return self.pages.render("job.html", request, page="ops", job=job)

    async def operation_events(self, request: Request) -> Response:
        """Server-sent events: the job's stages whenever they change, then where to go."""
        job = self._job(request)
        fragment = self.pages.env.get_template("_job.html")
        closing = self.pages.closing

        async def stream() -> AsyncIterator[str]:
            if job is None:
                return
            sent = -1
            while not closing.is_set():
                if job.version != sent:
                    sent = job.version
                    yield _sse("progress", fragment.render(job=job))
                if job.state != "running":
                    yield _sse("finished", json.dumps({"state": job.state,
                                                       "url": job.done_url or ""}))
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), PROGRESS_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def cancel(self, request: Request) -> Response:
        op_id = request.path_params["op_id"]
        job = self.jobs.get(op_id)
        if self.jobs.cancel(op_id) and job is not None and job.task is not None:
            await asyncio.wait({job.task}, timeout=10)
            return RedirectResponse(f"/ops/{op_id}", status_code=303)
        task = self.daemon.running.get(op_id)  # started by a CLI: cancelled as its Ctrl-C would
        if task is not None and self.daemon.cancel_op(op_id, "cancelled from the web UI"):
            await asyncio.wait({task}, timeout=10)
        return RedirectResponse("/ops", status_code=303)

    # ---- terminal

    async def terminal(self, request: Request) -> Response:
        vm = self.pages.views.find(request.path_params["name"])
        if vm is None:
            return self.pages.render("missing.html", request, 404, page="vms",
                                     name=request.path_params["name"])
        page = self.pages.render("terminal.html", request, page="vms", vm=vm)
        # xterm.js styles its rows with <style> elements it writes; scripts stay 'self' only.
        page.headers["content-security-policy"] = CSP.replace(
            "default-src 'self';", "default-src 'self'; style-src 'self' 'unsafe-inline';")
        return page

    async def terminal_ws(self, ws: WebSocket) -> None:
        await serve_terminal(self.daemon, ws, self.pages.closing)


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"

