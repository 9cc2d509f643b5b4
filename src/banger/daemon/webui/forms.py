"""The create and pull forms: their fields checked into the RPC params the CLI would send, and
the work each job does (the same handlers as `vm create`, `vm run PATH`, `image pull`)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from banger.config.sizes import parse_size_mib
from banger.daemon.handlers.images import image_delete, image_pull
from banger.daemon.handlers.kernels import kernel_delete, kernel_pull
from banger.daemon.handlers.vms import vm_create
from banger.daemon.handlers.workspace import workspace_prepare
from banger.daemon.webui.jobs import JobContext, Work
from banger.egress_rules import Policy
from banger.errors import InvalidArgument
from banger.rpc.methods import NameParams
from banger.rpc.methods.image import ImagePullParams
from banger.rpc.methods.kernel import KernelPullParams
from banger.rpc.methods.vm import CreateRequest
from banger.rpc.methods.workspace import PrepareParams

NET_MODES = ("auto", "tap", "user")
MAX_FIELD = 1000  # a path or a reference; forms are small
_NUMBER = re.compile(r"^[0-9]{1,4}$")


def _field(form: Any, key: str) -> str:
    value = form.get(key)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > MAX_FIELD:
        raise InvalidArgument(f"{key} is too long")
    return text


@dataclass(frozen=True)
class CreateForm:
    request: CreateRequest
    repo: str | None


def parse_create(form: Any, images: list[str]) -> CreateForm:
    """The create form's fields, refused in one line each like the CLI's options."""
    image = _field(form, "image") or None
    if image is not None and image not in images:
        raise InvalidArgument(f"unknown image {image!r}; pick one from the list")
    vcpu_text = _field(form, "vcpu")
    if vcpu_text and not _NUMBER.match(vcpu_text):
        raise InvalidArgument("vCPUs must be a whole number such as 2")
    memory = _field(form, "memory")
    net = _field(form, "net") or None
    if net is not None and net not in NET_MODES:
        raise InvalidArgument(f"network must be one of {', '.join(NET_MODES)}")
    allow = _field(form, "allow").replace(",", " ").split()
    request = CreateRequest(
        name=_field(form, "name") or None, image=image,
        vcpu=int(vcpu_text) if vcpu_text else None,
        memory_mib=parse_size_mib(memory, what="memory") if memory else None, net=net,
        allow=Policy.of(allow).texts() if allow else None)
    return CreateForm(request, _field(form, "repo") or None)


async def check_repo(path: str) -> None:
    """What `vm run PATH` checks before it creates anything: a git repo banger can ship."""
    from banger.workspace.payload import ShipOptions, prepared

    def check() -> None:
        with prepared(path, ShipOptions(), build=False):
            pass

    await asyncio.to_thread(check)


def create_work(form: CreateForm) -> Work:
    async def work(ctx: JobContext) -> str:
        vm = await vm_create(ctx, form.request)
        ctx.job.done_url = f"/vms/{vm.name}"  # the VM page is useful even if shipping fails
        if form.repo:
            await _ship(ctx, vm.name, form.repo)
        return f"/vms/{vm.name}"

    return work


async def _ship(ctx: JobContext, vm: str, path: str) -> None:
    """`vm run PATH`'s shipping: the payload built here (git runs in a thread), then installed."""
    from banger.workspace.payload import ShipOptions, prepared

    ctx.progress("workspace", None, f"packing {path}")
    shipping = prepared(path, ShipOptions())
    shipment = await asyncio.to_thread(shipping.__enter__)
    try:
        assert shipment.payload is not None
        await workspace_prepare(ctx, PrepareParams(vm, str(shipment.payload), shipment.plan))
    finally:
        await asyncio.to_thread(shipping.__exit__, None, None, None)


def pull_work(kind: str, source: str) -> Work:
    async def work(ctx: JobContext) -> str:
        if kind == "kernel":
            await kernel_pull(ctx, KernelPullParams(source))
        else:
            await image_pull(ctx, ImagePullParams(source))
        return "/images"

    return work


def delete_work(kind: str, name: str) -> Work:
    async def work(ctx: JobContext) -> str:
        ctx.progress("delete", None, f"{kind} {name}")
        if kind == "kernel":
            await kernel_delete(ctx, NameParams(name))
        else:
            await image_delete(ctx, NameParams(name))
        return "/images"

    return work


def parse_source(form: Any) -> str:
    source = _field(form, "source")
    if not source:
        raise InvalidArgument("name a catalog image or an OCI reference such as debian:bookworm")
    if any(c.isspace() or not c.isprintable() for c in source):
        raise InvalidArgument("an image source has no spaces or control characters")
    return source
